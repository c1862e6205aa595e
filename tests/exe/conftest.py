"""Fixtures for the single-executable tests: the binary and an old-distribution root filesystem.

Environment (all optional):
  HMONITOR_EXE             a prebuilt binary; otherwise `tools/build_exe.py` builds one, once
                           per session, into build/exe-test/hmonitor
  HMONITOR_ROOTFS          a prebuilt root filesystem (made with debootstrap) to run it in
  HMONITOR_ROOTFS_SUITES   debootstrap candidates, oldest first, `suite@mirror,...`; the first
                           whose mirror answers is built and cached in build/rootfs-<suite>
  HMONITOR_REQUIRE_ROOTFS  =1: fail instead of skipping when no root filesystem can be made
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NoReturn

import pytest

from .support import REPORT, Rootfs, report

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
# Oldest first: the older the glibc the agent runs on, the better the test. Archived releases
# (stretch glibc 2.24, buster 2.28) are only on archive.debian.org; deb.debian.org keeps bullseye
# (2.31), still older than the 2.35 a plain PyInstaller build of ours needs.
DEFAULT_SUITES = (
    "stretch@http://archive.debian.org/debian,"
    "buster@http://archive.debian.org/debian,"
    "bullseye@http://deb.debian.org/debian"
)
MARKER = ".hmonitor-rootfs"  # written once debootstrap finished, so half-made trees are ignored
REMOVED_KEYS = Path("/usr/share/keyrings/debian-archive-removed-keys.gpg")

def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.write_sep("-", "single executable (tests/exe)")
        for line in REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def exe() -> Path:
    """The single executable: HMONITOR_EXE, or built once for this session."""
    given = os.environ.get("HMONITOR_EXE")
    if given:
        path = Path(given).absolute()
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"HMONITOR_EXE={given} is not an executable file")
        report(f"exe: using HMONITOR_EXE={path}")
    else:
        path = BUILD / "exe-test" / "hmonitor"
        started = time.monotonic()
        build = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "build_exe.py"), "--out", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if build.returncode != 0:
            pytest.fail(f"tools/build_exe.py failed:\n{build.stdout[-3000:]}{build.stderr[-3000:]}")
        report(f"exe: built by tools/build_exe.py in {time.monotonic() - started:.0f} s")
    size = path.stat().st_size
    report(f"exe: size {size} bytes ({size / 2**20:.1f} MiB)")
    return path


def _no_rootfs(reason: str) -> NoReturn:
    if os.environ.get("HMONITOR_REQUIRE_ROOTFS") == "1":
        pytest.fail(f"no old-distribution root filesystem: {reason}")
    pytest.skip(f"no old-distribution root filesystem: {reason}")


def _mounts_under(path: Path) -> list[str]:
    prefix = os.fspath(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _remove_tree(path: Path) -> None:
    """Deletes a half-made root filesystem, never descending into a mount (/proc, a bound /dev)."""
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    if left := _mounts_under(path):
        _no_rootfs(f"{path} still has mounts {left}; remove them by hand")
    shutil.rmtree(path)


def _mirror_answers(suite: str, mirror: str) -> str | None:
    """None when the mirror serves the suite, else why not."""
    url = f"{mirror}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            resp.read(1)
        return None
    except urllib.error.HTTPError as err:
        return f"{url}: HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"{url}: {reason}"


def _glibc(rootfs: Path) -> str:
    out = subprocess.run(
        ["chroot", str(rootfs), "getconf", "GNU_LIBC_VERSION"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or f"unknown ({out.stderr.strip()})"


def _suite_of(rootfs: Path) -> str:
    marker = rootfs / MARKER
    if marker.is_file():
        return marker.read_text().strip()
    for line in (rootfs / "etc" / "os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME=") or line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "unknown"


def _debootstrap(suite: str, mirror: str, target: Path) -> str | None:
    """Builds `target` for `suite`; None on success, else why not (with the log's tail)."""
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        _remove_tree(tmp)
    log = target.with_name(target.name + ".log")
    cmd = ["debootstrap", "--variant=minbase"]
    if "archive.debian.org" in mirror:
        # Archived releases are signed with retired keys; verify against those, never skip it.
        if not REMOVED_KEYS.is_file():
            return f"{REMOVED_KEYS} missing (package debian-archive-keyring), cannot verify {suite}"
        cmd.append(f"--keyring={REMOVED_KEYS}")
    cmd += [suite, str(tmp), mirror]
    started = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        tail = "\n".join(log.read_text().splitlines()[-8:])
        if tmp.exists():
            _remove_tree(tmp)
        return f"debootstrap {suite} from {mirror} failed (exit {rc}), log {log}:\n{tail}"
    (tmp / MARKER).write_text(suite + "\n")
    tmp.rename(target)
    report(f"rootfs: debootstrap {suite} from {mirror} took {time.monotonic() - started:.0f} s")
    return None


@pytest.fixture(scope="session")
def old_rootfs() -> Rootfs:
    """An old Debian root filesystem to chroot into: given, cached, or made with debootstrap."""
    if os.geteuid() != 0:
        _no_rootfs("chroot, mount and debootstrap need root; run the tests as root")
    missing = [t for t in ("chroot", "unshare", "mount", "umount") if not shutil.which(t)]
    if missing:
        _no_rootfs(f"missing programs: {', '.join(missing)} (packages coreutils, util-linux)")
    given = os.environ.get("HMONITOR_ROOTFS")
    if given:
        path = Path(given).absolute()
        if not (path / "etc" / "os-release").is_file():
            pytest.fail(f"HMONITOR_ROOTFS={given} does not look like a root filesystem")
        rootfs = Rootfs(path, _suite_of(path), _glibc(path))
        report(f"rootfs: HMONITOR_ROOTFS={path}, {rootfs.suite}, {rootfs.glibc}")
        return rootfs
    candidates = [
        (suite.strip(), mirror.strip() or "http://deb.debian.org/debian")
        for suite, _, mirror in (
            c.partition("@") for c in os.environ.get("HMONITOR_ROOTFS_SUITES", DEFAULT_SUITES)
            .split(",") if c.strip()
        )
    ]
    # A cached tree of any candidate wins over making an older one: CI time matters more.
    for suite, _ in candidates:
        path = BUILD / f"rootfs-{suite}"
        if (path / MARKER).is_file():
            rootfs = Rootfs(path, suite, _glibc(path))
            report(f"rootfs: cached {path}, {suite}, {rootfs.glibc}")
            return rootfs
    if not shutil.which("debootstrap"):
        _no_rootfs("debootstrap is not installed (apt-get install -y debootstrap)")
    why_not: list[str] = []
    BUILD.mkdir(exist_ok=True)
    for suite, mirror in candidates:
        unreachable = _mirror_answers(suite, mirror)
        if unreachable:
            why_not.append(f"{suite}: mirror unreachable or suite gone ({unreachable})")
            continue
        path = BUILD / f"rootfs-{suite}"
        failed = _debootstrap(suite, mirror, path)
        if failed:
            why_not.append(f"{suite}: {failed}")
            continue
        rootfs = Rootfs(path, suite, _glibc(path))
        report(f"rootfs: made {path}, {suite}, {rootfs.glibc}")
        if why_not:
            report("rootfs: older suites not available: " + "; ".join(why_not))
        return rootfs
    _no_rootfs("could not make one from any candidate:\n  " + "\n  ".join(why_not))
