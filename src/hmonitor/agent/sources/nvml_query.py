"""How the NVML source asks one device (a GPU or a MIG device) and maps NVML's errors.

Imports pynvml; with nvml.py and nvml_mig.py it is all of the project that does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import pynvml

from hmonitor.agent.sources.gpu import GpuUnavailable

T = TypeVar("T")

# Errors that mean "this value does not exist here", not "this GPU is broken".
ABSENT = {
    pynvml.NVML_ERROR_NOT_SUPPORTED,
    pynvml.NVML_ERROR_NOT_FOUND,
    pynvml.NVML_ERROR_NO_PERMISSION,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
}
# Of those, the ones that stay true for a device while the library stays initialised: the getter
# need not be asked again.
UNSUPPORTED = {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
# Errors after which the whole library must be initialised again (driver reloaded or gone).
REINIT = {
    pynvml.NVML_ERROR_UNINITIALIZED,
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
}
# A GPU or compute instance id of a process when MIG is off.
NO_INSTANCE = 0xFFFFFFFF


class GpuFailed(Exception):
    """A query on one GPU failed in a way that makes the GPU unusable (e.g. GPU_IS_LOST)."""


def describe(err: pynvml.NVMLError) -> str:
    try:
        return str(err)
    except Exception:  # noqa: BLE001 - nvmlErrorString itself can fail when the library is gone
        return f"NVML error {getattr(err, 'value', '?')}"


def text(value: str | bytes) -> str:
    """Bindings hand out strings as bytes (older ones) or str."""
    return value if isinstance(value, str) else value.decode(errors="replace")


def instance_id(value: Any) -> int | None:
    """A GPU/compute instance id from NVML; None for "not on a MIG instance"."""
    if value is None:
        return None
    number = int(value)
    return None if number == NO_INSTANCE else number


def query(fn: Callable[..., T], *args: Any, default: T) -> T:
    """One NVML getter: `default` for absent values, GpuFailed for a broken GPU."""
    try:
        return fn(*args)
    except pynvml.NVMLError as err:
        if err.value in ABSENT:
            return default
        if err.value in REINIT:
            raise GpuUnavailable(describe(err)) from err
        raise GpuFailed(describe(err)) from err


class Device:
    """The getters of one device, remembering which of them it does not support.

    `unsupported` is shared by all devices and cleared when the library is initialised again;
    `key` names the device in it (its UUID, and for a GPU its MIG mode, which changes what the
    GPU answers).  A lenient device (a MIG device) reads any error other than a lost GPU or a
    failing library as an absent value: one odd instance must not take its GPU down.
    """

    def __init__(
        self,
        handle: Any,
        key: str,
        unsupported: set[tuple[Hashable, ...]],
        *,
        lenient: bool = False,
    ) -> None:
        self.handle = handle
        self.key = key
        self._unsupported = unsupported
        self._lenient = lenient

    def get(self, fn: Callable[..., T], *args: Any, default: T, key: Hashable = None) -> T:
        """`fn(handle, *args)`; `key` stands for `args` in the unsupported set when they vary."""
        cache_key = (self.key, fn.__name__, args if key is None else key)
        if cache_key in self._unsupported:
            return default
        try:
            return fn(self.handle, *args)
        except pynvml.NVMLError as err:
            if err.value in UNSUPPORTED:
                self._unsupported.add(cache_key)
                return default
            if err.value in ABSENT:
                return default
            if err.value in REINIT:
                raise GpuUnavailable(describe(err)) from err
            if self._lenient and err.value != pynvml.NVML_ERROR_GPU_IS_LOST:
                return default
            raise GpuFailed(describe(err)) from err
