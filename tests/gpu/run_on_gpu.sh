#!/usr/bin/env bash
# Runs the real-driver suite (tests/gpu) on a machine with an NVIDIA GPU and driver.
#
#   bash tests/gpu/run_on_gpu.sh [pytest args...]     (from the repository root)
#
# Makes .venv with the test dependencies if it is missing, shows nvidia-smi's view, then runs
# `pytest -v tests/gpu`, which compares the agent's GetInfo with nvidia-smi field by field.
# Needs python3 (3.10+) with venv, and network access the first time (pip).
set -euo pipefail

cd "$(dirname "$0")/../.."
[ -f pyproject.toml ] || { echo "run from the hmonitor repository" >&2; exit 2; }

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "nvidia-smi not found: this machine has no NVIDIA driver; the suite would only skip" >&2
    exit 1
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "== making .venv"
    "$PYTHON" -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import hmonitor, pytest, grpc" >/dev/null 2>&1; then
    echo "== installing hmonitor with its test dependencies"
    .venv/bin/pip install --quiet -e '.[test]'
fi

echo "== nvidia-smi"
nvidia-smi || true
echo
nvidia-smi -L || true
echo
nvidia-smi --query-gpu=index,uuid,pci.bus_id,name,memory.total,memory.used,utilization.gpu,temperature.gpu,fan.speed,power.draw,power.limit,clocks.sm,clocks.mem,mig.mode.current,driver_version --format=csv || true
echo
nvidia-smi --query-compute-apps=pid,used_memory,gpu_uuid --format=csv || true
echo
echo "== binding: $(.venv/bin/python -c 'import importlib.metadata as m; print("nvidia-ml-py", m.version("nvidia-ml-py"))')"
echo "== pytest -v tests/gpu"
exec .venv/bin/pytest -v -s -p no:cacheprovider -rs tests/gpu "$@"
