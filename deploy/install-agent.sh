#!/usr/bin/env bash
# Copy the single-executable agent to GPU servers and install the spec's cron line for a user.
#
#   deploy/install-agent.sh --hosts hosts.txt --user alice --allow 10.0.0.5/32 [--dry-run]
#
# hosts.txt: one `[login@]host` per line; blank lines and `# comments` ignored (the format
# parallel-ssh reads too; ports go in ~/.ssh/config). Per host, over ssh:
#   1. copies the binary to DIR/hmonitor (default /opt/hmonitor) and makes DIR/tmp for the user
#   2. checks that it runs there as the user (`hmonitor --version`)
#   3. replaces any earlier hmonitor line in the user's crontab by
#        */5 * * * * GOHM_ADDR=... GOHM_ALLOW=... /opt/hmonitor/hmonitor 2>&1 | logger -t hmonitor
#   4. with --restart: stops the user's running agent of DIR/hmonitor and starts the new one now
# Privileged steps use `sudo -n` unless the login is root. Uses parallel-ssh/parallel-scp when
# installed, else one host after another. --dry-run prints everything and changes nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
binary="$here/../dist/hmonitor"
hosts="" user="" allow="" addr="0.0.0.0:9203" dir="/opt/hmonitor"
dry_run=0 restart=0 syslog=1 cron=1 parallel=16

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; cat <<EOF

Options:
  --hosts FILE      hosts to install on (required)
  --user NAME       account that runs the agent from its crontab (required)
  --allow CIDRS     GOHM_ALLOW: the dashboard's address(es), comma-separated (required)
  --addr HOST:PORT  GOHM_ADDR [${addr}]
  --binary PATH     the executable [dist/hmonitor]
  --dir DIR         install directory on the hosts [${dir}]
  --restart         stop the running agent and start the new one now
  --no-cron         copy only; leave crontabs alone
  --no-syslog       leave the cron line's output to cron (mail) instead of logger
  --parallel N      hosts at a time with parallel-ssh [${parallel}]
  --dry-run         print what would run, change nothing
EOF
}

die() { echo "install-agent: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) hosts=${2:?}; shift 2 ;;
        --user) user=${2:?}; shift 2 ;;
        --allow) allow=${2:?}; shift 2 ;;
        --addr) addr=${2:?}; shift 2 ;;
        --binary) binary=${2:?}; shift 2 ;;
        --dir) dir=${2:?}; shift 2 ;;
        --restart) restart=1; shift ;;
        --no-cron) cron=0; shift ;;
        --no-syslog) syslog=0; shift ;;
        --parallel) parallel=${2:?}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

if [ -z "$hosts" ] || [ -z "$user" ] || [ -z "$allow" ]; then
    die "--hosts, --user and --allow are required"
fi
[ -r "$hosts" ] || die "cannot read hosts file $hosts"
[ -f "$binary" ] || die "no binary at $binary: build it with 'python3 tools/build_exe.py'"
# Every value ends up inside a remote shell script and a crontab: allow only plain characters.
[[ "$user" =~ ^[a-z_][a-z0-9_.-]*$ ]] || die "bad user name: $user"
[[ "$allow" =~ ^[0-9A-Fa-f.:/,]+$ ]] || die "bad --allow (comma-separated CIDRs): $allow"
[[ "$addr" =~ ^[][0-9A-Za-z.:-]+:[0-9]+$ ]] || die "bad --addr (host:port): $addr"
[[ "$dir" =~ ^/[A-Za-z0-9._/-]+$ ]] || die "bad --dir (absolute path): $dir"
[[ "$parallel" =~ ^[0-9]+$ ]] || die "bad --parallel: $parallel"

mapfile -t host_list < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$hosts" | grep -v '^$' || true)
[ ${#host_list[@]} -gt 0 ] || die "no hosts in $hosts"

line="*/5 * * * * GOHM_ADDR=$addr GOHM_ALLOW=$allow $dir/hmonitor"
[ "$syslog" -eq 1 ] && line="$line 2>&1 | logger -t hmonitor"
upload=".hmonitor.upload"  # in the login's home directory on the host

# The script each host runs (`sh -s`), POSIX sh for old distributions.
remote_script() {
    cat <<EOF
set -eu
if [ "\$(id -u)" -eq 0 ]; then SUDO=""; AS_USER="runuser -u $user --"
else SUDO="sudo -n"; AS_USER="sudo -n -u $user"; fi
[ "\$(id -un)" != '$user' ] || AS_USER=""
host=\$(hostname)
\$SUDO install -d -m 0755 '$dir'
\$SUDO install -m 0755 "\$HOME/$upload" '$dir/hmonitor'
rm -f "\$HOME/$upload"
\$SUDO install -d -m 0700 -o '$user' '$dir/tmp'
version=\$(\$AS_USER env TMPDIR='$dir/tmp' '$dir/hmonitor' --version)
echo "\$host: installed \$version in $dir, runs as $user"
EOF
    if [ "$cron" -eq 1 ]; then
        cat <<EOF
if [ "\$(id -un)" = '$user' ]; then CRONTAB="crontab"; else CRONTAB="\$SUDO crontab -u $user"; fi
{ \$CRONTAB -l 2>/dev/null | grep -vF '$dir/hmonitor' || true; echo '$line'; } | \$CRONTAB -
echo "\$host: crontab of $user now runs $dir/hmonitor every 5 minutes"
EOF
    fi
    if [ "$restart" -eq 1 ]; then
        cat <<EOF
\$SUDO pkill -TERM -u '$user' -f '^$dir/hmonitor\$' || true
sleep 2
\$AS_USER env TMPDIR='$dir/tmp' GOHM_ADDR='$addr' GOHM_ALLOW='$allow' \\
    setsid sh -c '$dir/hmonitor 2>&1 | logger -t hmonitor' </dev/null >/dev/null 2>&1 &
sleep 3
echo "\$host: agent restarted"
EOF
    fi
}

echo "install-agent: $binary ($(stat -c %s "$binary") bytes) -> ${#host_list[@]} host(s): ${host_list[*]}"
echo "install-agent: directory $dir, user $user"
[ "$cron" -eq 1 ] && echo "install-agent: cron line: $line"

run() {
    echo "+ $*"
    [ "$dry_run" -eq 1 ] || "$@"
}

ssh_opts=(-o BatchMode=yes -o ConnectTimeout=10)
pssh_opts=(-O BatchMode=yes -O ConnectTimeout=10)
if [ "$dry_run" -eq 1 ]; then
    echo "install-agent: --dry-run: the script each host would run:"
    remote_script | sed 's/^/    /'
fi

if command -v parallel-ssh >/dev/null && command -v parallel-scp >/dev/null; then
    run parallel-scp -h "$hosts" -p "$parallel" "${pssh_opts[@]}" "$binary" "$upload"
    if [ "$dry_run" -eq 0 ]; then
        remote_script | parallel-ssh -h "$hosts" -p "$parallel" -i -I "${pssh_opts[@]}" 'sh -s'
    else
        echo "+ parallel-ssh -h $hosts -p $parallel -i -I 'sh -s' < (the script above)"
    fi
else
    failed=()
    for host in "${host_list[@]}"; do
        echo "install-agent: == $host"
        if ! run scp -q "${ssh_opts[@]}" "$binary" "$host:$upload"; then
            failed+=("$host")
        elif [ "$dry_run" -eq 1 ]; then
            echo "+ ssh $host sh -s < (the script above)"
        elif ! remote_script | ssh "${ssh_opts[@]}" "$host" 'sh -s'; then
            failed+=("$host")
        fi
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "install-agent: FAILED on ${#failed[@]} host(s): ${failed[*]}" >&2
        exit 1
    fi
fi
echo "install-agent: done"
