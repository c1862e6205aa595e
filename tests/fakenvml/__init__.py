"""A fake NVML library for tests, and the Python side that builds and configures it.

`fakenvml.c` compiles to a `libnvidia-ml.so.1` that the real `pynvml` binding loads when its
directory is first on `LD_LIBRARY_PATH` at process start, so it only works in a subprocess:

    lib = build_library(tmp / "lib")
    write_config(tmp / "gpus.txt", [FakeGpu(util=50), FakeGpu(fan=None, lost="query")])
    subprocess.run([...], env=nvml_env(lib, tmp / "gpus.txt"))

The library re-reads the config whenever the file changes (at every init call and every
`nvmlDeviceGetCount*` call), so `write_config` again while the process runs to change its GPUs.
The file format is described at the top of `fakenvml.c`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "LIB_NAME",
    "NVML_ERROR_DRIVER_NOT_LOADED",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
    "NVML_ERROR_NO_PERMISSION",
    "OLDEST_BINDING",
    "PROBE",
    "SOURCE",
    "FakeGpu",
    "FakeMig",
    "FakeProc",
    "binding_dir",
    "build_library",
    "consumer_gpu",
    "mig_uuid_for",
    "nvml_env",
    "pci_for",
    "render_config",
    "uuid_for",
    "write_config",
]

# Where `make test` installs the oldest nvidia-ml-py we support (pip install --target).
MIN_DIR_ENV = "HMONITOR_PYNVML_MIN_DIR"
OLDEST_BINDING = "12.560.30"

SOURCE = Path(__file__).with_name("fakenvml.c")
# A script that prints, as JSON, what the binding reads through the fake (see its docstring).
PROBE = Path(__file__).with_name("probe.py")
LIB_NAME = "libnvidia-ml.so.1"

# -fvisibility=hidden: only the NVML entry points are exported, as in the real library.
_CFLAGS = (
    "-shared",
    "-fPIC",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pthread",
    "-fvisibility=hidden",
    f"-Wl,-soname,{LIB_NAME}",
)

# NVML return codes a test may want to configure as the init error.
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18

_GIB = 1 << 30
_MIB = 1 << 20


@dataclass
class FakeProc:
    """A process on a GPU: listed by the compute or graphics running-process call by kind."""

    pid: int
    used_memory: int
    kind: Literal["compute", "graphics"] = "compute"
    sm_util: int | None = None  # None: no utilization sample for this process
    # The MIG instance it runs on (both or neither); the running-process entries carry them.
    gpu_instance: int | None = None
    compute_instance: int | None = None


@dataclass
class FakeMig:
    """A MIG device (a compute instance in a GPU instance).  Defaults: an H200 1g.18gb slice.

    Its name is "<GPU name> MIG <profile>", its UUID `mig_uuid_for(gpu uuid, gi, ci)`."""

    gpu_instance: int = 1
    compute_instance: int = 0
    profile: str = "1g.18gb"
    mem_total: int = 17 * _GIB + 512 * _MIB
    mem_used: int = 0
    sm_count: int = 16


@dataclass
class FakeGpu:
    """One GPU.  Defaults describe an idle H200 (141 GiB usable, no fan, MIG off).

    A value that is None answers NVML_ERROR_NOT_SUPPORTED.  Pairs: `ecc` (corrected,
    uncorrected), `retired_pages` (multiple single-bit, double-bit), `remapped_rows` (corrected,
    uncorrected)."""

    name: str = "NVIDIA H200"
    uuid: str | None = None  # None: derived from the index, see uuid_for
    util: int = 0
    mem_util: int = 0
    temp: int = 40
    fan: int | None = None  # None: nvmlDeviceGetFanSpeed answers NOT_SUPPORTED
    mem_total: int = 150754820096
    mem_used: int = 0
    # handle: nvmlDeviceGetHandleByIndex fails with GPU_IS_LOST;
    # query: the handle works and every query on it fails with GPU_IS_LOST
    lost: Literal["none", "handle", "query"] = "none"
    procs: list[FakeProc] = field(default_factory=list)
    pci_bus_id: str | None = None  # None: derived from the index, see pci_for
    power_mw: int | None = 120_000
    power_limit_mw: int | None = 700_000
    sm_clock_mhz: int | None = 1980
    mem_clock_mhz: int | None = 2619
    throttle_reasons: int | None = 0
    ecc: tuple[int, int] | None = (0, 0)
    retired_pages: tuple[int, int] | None = None  # Hopper has row remapping, not page retirement
    remapped_rows: tuple[int, int] | None = (0, 0)
    mig_mode: Literal["none", "off", "on"] = "off"  # none: the GPU has no MIG
    # With MIG on: whether the whole GPU lists processes (as for root) or answers NO_PERMISSION
    # (as for everyone else; processes are then listed per MIG device only).
    mig_parent_procs: bool = False
    mig: list[FakeMig] = field(default_factory=list)


def consumer_gpu(**fields: Any) -> FakeGpu:
    """A GPU that reports none of the datacenter extras: no power, clocks, throttle reasons,
    ECC or row remapping, and no MIG (a GeForce card, as far as NVML tells)."""
    bare: dict[str, Any] = {
        "power_mw": None, "power_limit_mw": None, "sm_clock_mhz": None, "mem_clock_mhz": None,
        "throttle_reasons": None, "ecc": None, "remapped_rows": None, "mig_mode": "none",
    }
    return FakeGpu(**{**bare, **fields})


def binding_dir(which: str) -> Path | None:
    """The pynvml binding a test runs against: None for the installed one; for "oldest", the
    directory named by $HMONITOR_PYNVML_MIN_DIR (the test is skipped when it is unset)."""
    if which == "installed":
        return None
    import pytest  # noqa: PLC0415 - only the tests choose bindings

    min_dir = os.environ.get(MIN_DIR_ENV)
    if not min_dir:
        pytest.skip(f"{MIN_DIR_ENV} is not set; to test the oldest supported binding: "
                    f"pip install --target DIR nvidia-ml-py=={OLDEST_BINDING}")
    path = Path(min_dir).absolute()
    # Set but wrong is a broken CI setup, not a reason to skip quietly.
    assert (path / "pynvml.py").is_file(), f"{MIN_DIR_ENV}={min_dir} has no pynvml.py"
    return path


def uuid_for(index: int) -> str:
    """The UUID a GPU gets when its `uuid` is None (same shape as real ones)."""
    return f"GPU-00000000-0000-0000-0000-{index:012x}"


def pci_for(index: int) -> str:
    """The PCI bus id a GPU gets when its `pci_bus_id` is None."""
    return f"00000000:{0x18 + index:02X}:00.0"


def mig_uuid_for(gpu_uuid: str, gpu_instance: int, compute_instance: int) -> str:
    """The UUID of a MIG device, as the fake derives it (same shape as real ones)."""
    body = gpu_uuid[4:] if gpu_uuid.startswith("GPU-") else gpu_uuid
    return f"MIG-{gpu_instance & 0xFF:02x}{compute_instance & 0xFF:02x}{body[4:]}"


def _source_digest() -> str:
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update("\0".join(_CFLAGS).encode())
    return h.hexdigest()


def build_library(out_dir: Path) -> Path:
    """Compiles the fake into `out_dir/libnvidia-ml.so.1` and returns `out_dir`.

    Skips the compile when the library there was built from the same source and flags.  The
    library is written under a temporary name and renamed, so a concurrent build or a process
    loading it never sees half a file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / LIB_NAME
    stamp = out_dir / f"{LIB_NAME}.sha256"
    digest = _source_digest()
    if lib.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return out_dir
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc not found: the fake NVML library cannot be built")
    tmp = out_dir / f".{LIB_NAME}.{os.getpid()}.tmp"
    result = subprocess.run(
        [gcc, *_CFLAGS, "-o", str(tmp), str(SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building the fake NVML library failed:\n{result.stderr}")
    os.replace(tmp, lib)
    stamp.write_text(digest)
    return out_dir


def _check_text(what: str, value: str) -> str:
    # The C parser takes the rest of the line, so only line breaks and emptiness can break it.
    if not value or "\n" in value or "\r" in value or len(value) >= 80:
        raise ValueError(f"{what} must be 1-79 characters on one line: {value!r}")
    return value


def _check_percent(what: str, value: int) -> int:
    if not 0 <= value <= 100:
        raise ValueError(f"{what} must be 0-100: {value}")
    return value


def _opt(value: int | tuple[int, ...] | None) -> str:
    if value is None:
        return "none"
    values = value if isinstance(value, tuple) else (value,)
    if any(v < 0 for v in values):
        raise ValueError(f"values must not be negative: {value}")
    return " ".join(str(v) for v in values)


def _check_word(what: str, value: str) -> str:
    if not value or any(c.isspace() for c in value) or len(value) >= 32:
        raise ValueError(f"{what} must be 1-31 characters without blanks: {value!r}")
    return value


def _proc_line(proc: FakeProc) -> str:
    sm = "-" if proc.sm_util is None else _check_percent("sm_util", proc.sm_util)
    line = f"proc {proc.pid} {proc.used_memory} {proc.kind} {sm}"
    if (proc.gpu_instance is None) != (proc.compute_instance is None):
        raise ValueError(f"process {proc.pid}: set both gpu_instance and compute_instance")
    if proc.gpu_instance is not None:
        line += f" {proc.gpu_instance} {proc.compute_instance}"
    return line


def _gpu_lines(index: int, gpu: FakeGpu) -> list[str]:
    if not 0 <= gpu.mem_used <= gpu.mem_total:
        raise ValueError(f"GPU {index}: mem_used {gpu.mem_used} > mem_total {gpu.mem_total}")
    lines = [
        "gpu",
        f"name {_check_text('name', gpu.name)}",
        f"uuid {_check_text('uuid', gpu.uuid if gpu.uuid is not None else uuid_for(index))}",
        f"pci {_check_word('pci_bus_id', gpu.pci_bus_id or pci_for(index))}",
        f"util {_check_percent('util', gpu.util)}",
        f"mem_util {_check_percent('mem_util', gpu.mem_util)}",
        f"temp {gpu.temp}",
        f"fan {'none' if gpu.fan is None else _check_percent('fan', gpu.fan)}",
        f"mem {gpu.mem_total} {gpu.mem_used} {gpu.mem_total - gpu.mem_used}",
        f"lost {gpu.lost}",
        f"power {_opt(gpu.power_mw)}",
        f"power_limit {_opt(gpu.power_limit_mw)}",
        f"sm_clock {_opt(gpu.sm_clock_mhz)}",
        f"mem_clock {_opt(gpu.mem_clock_mhz)}",
        f"throttle {_opt(gpu.throttle_reasons)}",
        f"ecc {_opt(gpu.ecc)}",
        f"retired {_opt(gpu.retired_pages)}",
        f"remapped {_opt(gpu.remapped_rows)}",
        f"mig {gpu.mig_mode}",
        f"mig_parent_procs {'yes' if gpu.mig_parent_procs else 'no'}",
    ]
    if len(gpu.mig) > 7:
        raise ValueError(f"GPU {index}: at most 7 MIG devices")
    for m in gpu.mig:
        if not 0 <= m.mem_used <= m.mem_total:
            raise ValueError(f"GPU {index}: MIG mem_used {m.mem_used} > mem_total {m.mem_total}")
        lines.append(
            f"mig_instance {m.gpu_instance} {m.compute_instance} "
            f"{_check_word('profile', m.profile)} {m.mem_total} {m.mem_used} {m.sm_count}"
        )
    lines += [_proc_line(proc) for proc in gpu.procs]
    return lines


def render_config(
    gpus: Sequence[FakeGpu],
    *,
    init_error: int = 0,
    driver_version: str = "560.35.03",
    cuda_version: int = 12060,
) -> str:
    """The config file text for these GPUs (the format is described in fakenvml.c)."""
    lines = [
        "# fake NVML config, written by tests/fakenvml",
        f"init_error {init_error}",
        f"driver {_check_text('driver_version', driver_version)}",
        f"cuda {cuda_version}",
    ]
    for index, gpu in enumerate(gpus):
        lines += _gpu_lines(index, gpu)
    return "\n".join(lines) + "\n"


def write_config(
    path: Path,
    gpus: Sequence[FakeGpu],
    *,
    init_error: int = 0,
    driver_version: str = "560.35.03",
    cuda_version: int = 12060,
) -> None:
    """Writes the config atomically, with an mtime later than the file it replaces.

    The library notices a change by the file's identity and mtime; a rewrite within the same
    clock tick would otherwise look unchanged, so the mtime is bumped past the old one.
    """
    text = render_config(
        gpus, init_error=init_error, driver_version=driver_version, cuda_version=cuda_version
    )
    try:
        old_mtime: int | None = path.stat().st_mtime_ns
    except FileNotFoundError:
        old_mtime = None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    if old_mtime is not None and tmp.stat().st_mtime_ns <= old_mtime:
        os.utime(tmp, ns=(old_mtime + 1_000, old_mtime + 1_000))
    os.replace(tmp, path)


def nvml_env(lib_dir: Path, config: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a subprocess that loads the fake instead of any real NVML."""
    env = dict(os.environ if base is None else base)
    old = env.get("LD_LIBRARY_PATH")
    lib = os.fspath(lib_dir.absolute())
    env["LD_LIBRARY_PATH"] = f"{lib}{os.pathsep}{old}" if old else lib
    env["FAKE_NVML_CONFIG"] = os.fspath(config.absolute())
    return env
