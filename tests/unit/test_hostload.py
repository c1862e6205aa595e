"""Host load and memory from /proc/loadavg and /proc/meminfo (fixture files and this host)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
import pytest

from hmonitor.agent.sources.hostload import HostLoadReader, parse_loadavg, parse_meminfo

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"
KIB = 1024


def test_fixture_tree() -> None:
    load = HostLoadReader(FIXTURES).read()
    assert load.load1 == 0.36
    assert load.mem_total == 527958484 * KIB
    assert load.mem_used == (527958484 - 402653184) * KIB  # total - available, as `free`
    assert load.cpus == os.cpu_count()


def test_kernels_without_memavailable_count_free_buffers_and_cache() -> None:
    text = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n"
    assert parse_meminfo(text) == ((1000 - 400) * KIB, 1000 * KIB)


@pytest.mark.parametrize("text", ["", "nan 1 1 1/1 1", "-1 0 0 1/1 1", "inf 0 0", "x 1 2"])
def test_a_garbled_loadavg_is_an_error_not_a_number(text: str) -> None:
    with pytest.raises((ValueError, IndexError)):
        parse_loadavg(text)


def test_this_host_agrees_with_psutil() -> None:
    load = HostLoadReader().read()
    vm = psutil.virtual_memory()
    assert load.mem_total == vm.total
    assert abs(load.mem_used - (vm.total - vm.available)) < 256 << 20  # memory moves meanwhile
    assert load.load1 is not None and abs(load.load1 - os.getloadavg()[0]) < 2.0


def test_an_unreadable_tree_raises_for_the_collector_to_report(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "loadavg", tmp_path / "loadavg")  # meminfo missing
    with pytest.raises(FileNotFoundError):
        HostLoadReader(tmp_path).read()
