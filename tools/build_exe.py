"""Build the agent as one self-contained executable that runs on old distributions.

    python3 tools/build_exe.py [--out dist/hmonitor]

Steps: a build venv from Debian's /usr/bin/python3 in build/exe-venv (created once, reused),
`pip install '.[exe]'` into it (the agent's runtime dependencies plus PyInstaller and staticx,
no dev or web extras), PyInstaller --onefile from packaging/hmonitor.spec, then staticx, which
adds the build machine's glibc and loader so the result runs on glibc 2.23 (Ubuntu 16.04) too.

Why Debian's interpreter: staticx refuses interpreters with an RPATH/RUNPATH (pyenv's), and
PyInstaller needs the shared libpython (Debian package libpython3.X, pulled by python3-dev).
Needs: python3-venv python3-dev patchelf binutils (objcopy, objdump, strip) libc-bin (ldd).

The executable unpacks itself under $TMPDIR (default /tmp) at every start, so that directory
must allow executing files; NVML is never bundled, the host's libnvidia-ml.so.1 is loaded at
run time from LD_LIBRARY_PATH or the ld.so paths.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "packaging" / "hmonitor.spec"
DEFAULT_PYTHON = "/usr/bin/python3"
DEFAULT_VENV = ROOT / "build" / "exe-venv"
WORK = ROOT / "build" / "exe"
APT_HINT = "apt-get install -y python3-venv python3-dev patchelf binutils libc-bin"
# Must never end up in the bundle: the host driver's libraries and the protoc dev tool.
FORBIDDEN = re.compile(r"lib(nvidia-ml|cuda)\.so|grpc_tools")


class BuildError(Exception):
    """A missing prerequisite or a failed step; the message says what to do."""


def log(msg: str) -> None:
    print(f"build_exe: {msg}", flush=True)


def run(
    cmd: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs a step, echoing it; a failure raises BuildError with the step's output tail."""
    log("$ " + " ".join(str(c) for c in cmd))
    proc = subprocess.run(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise BuildError(f"{Path(str(cmd[0])).name} failed (exit {proc.returncode}):\n{tail}")
    return proc


def _has_rpath(binary: Path) -> bool:
    out = subprocess.run(
        ["objdump", "-p", str(binary)], capture_output=True, text=True, check=False
    ).stdout
    return re.search(r"^\s*(RPATH|RUNPATH)\s", out, re.MULTILINE) is not None


def check_prerequisites(python: Path) -> None:
    """Everything the build needs, all problems reported at once."""
    problems: list[str] = []
    missing = [t for t in ("patchelf", "objcopy", "objdump", "strip", "ldd") if not shutil.which(t)]
    if missing:
        problems.append(f"missing programs: {', '.join(missing)}")
    if not (python.is_file() and os.access(python, os.X_OK)):
        problems.append(f"{python} not found (Debian's python3)")
    else:
        if not missing and _has_rpath(python.resolve()):
            problems.append(
                f"{python} has an RPATH/RUNPATH (pyenv-style build), which staticx refuses; "
                "use Debian's /usr/bin/python3 (--python)"
            )
        probe = subprocess.run(
            [
                str(python),
                "-c",
                "import ensurepip, sysconfig, os, sys\n"
                "d = sysconfig.get_config_var('LIBDIR') or ''\n"
                "m = sysconfig.get_config_var('MULTIARCH') or ''\n"
                "n = sysconfig.get_config_var('INSTSONAME') or ''\n"
                "ok = any(os.path.exists(os.path.join(p, n)) for p in (d, os.path.join(d, m)))\n"
                "sys.exit(0 if n and ok else 3)",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 3:
            problems.append(f"{python} has no shared libpython (PyInstaller needs it)")
        elif probe.returncode != 0:
            problems.append(f"{python} lacks venv/ensurepip")
    if problems:
        raise BuildError(
            "cannot build the executable:\n  - " + "\n  - ".join(problems) + f"\nfix: {APT_HINT}"
        )


def ensure_venv(python: Path, venv: Path) -> Path:
    """The build venv's interpreter; recreated when it was made from another Python."""
    vpy = venv / "bin" / "python"
    cfg = venv / "pyvenv.cfg"
    home = str(python.resolve().parent)
    if vpy.exists() and cfg.exists():
        fields = dict(
            line.split("=", 1) for line in cfg.read_text().splitlines() if "=" in line
        )
        if fields.get("home", "").strip() == home and subprocess.run(
            [str(vpy), "-c", "pass"], check=False
        ).returncode == 0:
            log(f"reusing build venv {venv}")
            return vpy
        log(f"build venv {venv} was made from another Python; recreating it")
        shutil.rmtree(venv)
    run([python, "-m", "venv", venv])
    return vpy


def install(vpy: Path) -> None:
    # The agent's own dependencies plus the exe extra; pip rebuilds the local project every time,
    # so the bundle always holds the working tree's code.
    run([vpy, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{ROOT}[exe]"])
    leaked = subprocess.run(
        [str(vpy), "-c", "import grpc_tools"], capture_output=True, check=False
    ).returncode == 0
    if leaked:
        # Something pulled it in; the spec excludes it anyway, but remove it to be sure.
        run([vpy, "-m", "pip", "uninstall", "--quiet", "--yes", "grpcio-tools"])


def check_bundle(venv: Path, onefile: Path) -> None:
    """Fails when the PyInstaller archive holds a driver library or grpc_tools."""
    listing = run([venv / "bin" / "pyi-archive_viewer", "--list", "--recursive", onefile]).stdout
    bad = sorted({m.group(0) for m in FORBIDDEN.finditer(listing)})
    if bad:
        raise BuildError(f"the bundle contains what it must not: {', '.join(bad)}")


def build(python: Path, venv: Path, out: Path) -> Path:
    check_prerequisites(python)
    vpy = ensure_venv(python, venv)
    install(vpy)
    dist, work = WORK / "dist", WORK / "work"
    env = dict(os.environ, PYTHONNOUSERSITE="1")
    analysed = run(
        [
            venv / "bin" / "pyinstaller",
            "--noconfirm",
            "--clean",
            "--log-level=WARN",
            "--distpath",
            dist,
            "--workpath",
            work,
            SPEC,
        ],
        env=env,
    )
    for line in analysed.stdout.splitlines():
        if line.startswith("hmonitor.spec:"):
            log(line)  # e.g. a driver library the spec kept out of the bundle
    onefile = dist / "hmonitor"
    check_bundle(venv, onefile)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp")
    # staticx adds this machine's glibc and loader, so the binary does not depend on the host's.
    run([venv / "bin" / "staticx", "--strip", onefile, tmp_out], env=env)
    tmp_out.chmod(0o755)  # staticx writes 0700; the agent runs as an ordinary user
    os.replace(tmp_out, out)
    # Smoke test: it starts, unpacks and imports everything the CLI needs.
    smoke = run([out, "--version"], env=env)
    log(f"smoke test: {smoke.stdout.strip()}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--out", type=Path, default=ROOT / "dist" / "hmonitor", help="[%(default)s]")
    p.add_argument("--python", type=Path, default=Path(DEFAULT_PYTHON),
                   help="interpreter for the build venv; no RPATH [%(default)s]")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="[%(default)s]")
    args = p.parse_args(argv)
    start = time.monotonic()
    try:
        out = build(args.python, args.venv.absolute(), args.out.absolute())
    except BuildError as err:
        print(f"build_exe: FAILED: {err}", file=sys.stderr)
        return 1
    size = out.stat().st_size
    log(f"built {out}: {size} bytes ({size / 2**20:.1f} MiB) in {time.monotonic() - start:.0f} s")
    log("run it with an executable TMPDIR (it unpacks itself there at every start)")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
