#!/usr/bin/env bash
# Debian/Ubuntu packages the test suite needs: gcc (fake NVML library), Chromium (browser tests),
# openssl (certificates for the TLS tests), prometheus and victoria-metrics (metrics, alert rules,
# the Prometheus history backend), tmux (the terminal client's full-screen tests), and for the single executable: Debian's python3 with venv,
# patchelf, binutils, debootstrap and its keyring.
# Installs only what is missing; uses sudo when not root.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have gcc || need+=(gcc libc6-dev)
have chromium || [ -x /usr/bin/chromium ] || need+=(chromium)
have patchelf || need+=(patchelf)
have objdump || need+=(binutils)
have debootstrap || need+=(debootstrap)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
have gpgv || need+=(gpgv)
have unshare || need+=(util-linux)
[ -x /usr/bin/python3 ] || need+=(python3)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
[ -e /usr/include/python3.11/Python.h ] || ls /usr/include/python3*/Python.h >/dev/null 2>&1 || need+=(python3-dev)
have getent || need+=(libc-bin)
have openssl || need+=(openssl)
have useradd || need+=(passwd)
have promtool || need+=(prometheus)  # promtool and the server: metrics, alert rules, history
have victoria-metrics || need+=(victoria-metrics)  # the history backend against a second PromQL store
have tmux || need+=(tmux)  # hmonitor-ctl top, driven with send-keys and capture-pane

if [ ${#need[@]} -eq 0 ]; then
    echo "system packages: all present"
    exit 0
fi
echo "system packages: installing ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
