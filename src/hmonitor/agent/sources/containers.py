"""Container names from the runtimes' files on disk, never through their sockets.

What each source needs: docker's config.v2.json (root, or the rootless owner's own home), podman's
containers.json (world-readable for rootful podman on most hosts; in the owner's home for
rootless), Kubernetes' /var/log/pods and /var/log/containers (world-readable on most nodes). A
source that cannot be read gives no name; nothing here raises.

Files in a user's home are under that user's control: they are opened without blocking (a FIFO
must not hang the agent), only when they are regular files owned by that user or root, and read
up to a bound.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from hmonitor.agent.sources.procfacts import ContainerRef

log = logging.getLogger(__name__)

_DOCKER_CONFIG_MAX = 4 << 20  # config.v2.json holds the env and labels: tens of KiB in practice
_PODMAN_JSON_MAX = 32 << 20  # one entry (~1 KiB) per container on the host
_LISTING_MAX = 10_000  # pods / container log links looked at, at most
_NAME_MAX = 253

_Key = tuple[str, str, str, "int | None"]  # runtime, id, pod, rootless owner


def home_of(uid: int) -> str | None:
    """The user's home directory from the password database, None when unknown."""
    try:
        return pwd.getpwuid(uid).pw_dir or None
    except (KeyError, OverflowError):
        return None


def read_bounded(path: str, limit: int, owners: tuple[int, ...] | None = None) -> bytes | None:
    """A regular file's content up to ``limit`` bytes (None when larger, missing, unreadable,
    not a regular file, or not owned by one of ``owners``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        if owners is not None and st.st_uid not in owners:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _clean(name: object) -> str:
    # Names go into a protobuf string and onto a web page: text only, bounded, printable.
    if not isinstance(name, str):
        return ""
    name = name[:_NAME_MAX]
    return name if name.isprintable() else ""


class ContainerNames:
    """Container id -> name, cached with a TTL and a size cap. Roots are parameters so tests
    use fixture trees."""

    def __init__(
        self,
        *,
        docker_root: str = "/var/lib/docker",
        podman_root: str = "/var/lib/containers/storage",
        pods_log_root: str = "/var/log/pods",
        containers_log_root: str = "/var/log/containers",
        home: Callable[[int], str | None] = home_of,
        ttl: float = 300.0,
        miss_ttl: float = 30.0,
        cap: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._docker_root = docker_root
        self._podman_root = podman_root
        self._pods_log_root = pods_log_root
        self._containers_log_root = containers_log_root
        self._home = home
        self._ttl = ttl
        # A container just started may not have its files written yet: look again soon.
        self._miss_ttl = miss_ttl
        self._cap = cap
        self._clock = clock
        self._cache: OrderedDict[_Key, tuple[str, float]] = OrderedDict()
        # containers.json parsed once per (path, mtime, size): one file names every container.
        self._podman_files: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}

    def name(self, ref: ContainerRef) -> str:
        """The container's name ("" when unknown); "namespace/pod/container" for Kubernetes."""
        if ref.name:
            return ref.name  # lxc, nspawn: the path is the name
        key = (ref.runtime, ref.id, ref.pod, ref.host_uid)
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > now:
            self._cache.move_to_end(key)
            return hit[0]
        try:
            found = self._lookup(ref)
        except (OSError, ValueError, TypeError, KeyError) as exc:  # never fail a collection
            log.debug("container %s: no name: %s", ref.id, exc)
            found = ""
        self._cache[key] = (found, now + (self._ttl if found else self._miss_ttl))
        self._cache.move_to_end(key)
        while len(self._cache) > self._cap:
            self._cache.popitem(last=False)
        return found

    def _lookup(self, ref: ContainerRef) -> str:
        if ref.pod:
            return self._kubernetes(ref.pod, ref.id)
        if ref.runtime == "docker":
            return self._docker(ref.id, ref.host_uid)
        if ref.runtime == "podman":
            return self._podman(ref.id, ref.host_uid)
        return ""

    def _user_root(self, host_uid: int, *parts: str) -> str | None:
        home = self._home(host_uid)
        return os.path.join(home, *parts) if home else None

    def _docker(self, cid: str, host_uid: int | None) -> str:
        owners: tuple[int, ...] | None = None
        root: str | None = self._docker_root
        if host_uid is not None:  # rootless: only that user's own storage names it
            root = self._user_root(host_uid, ".local", "share", "docker")
            owners = (host_uid, 0)
        if root is None:
            return ""
        data = read_bounded(os.path.join(root, "containers", cid, "config.v2.json"),
                            _DOCKER_CONFIG_MAX, owners)
        if data is None:
            return ""
        config = json.loads(data)
        if not isinstance(config, dict) or config.get("ID", cid) != cid:
            return ""
        return _clean(config.get("Name", "")).lstrip("/")

    def _podman(self, cid: str, host_uid: int | None) -> str:
        owners: tuple[int, ...] | None = None
        root: str | None = self._podman_root
        if host_uid is not None:
            root = self._user_root(host_uid, ".local", "share", "containers", "storage")
            owners = (host_uid, 0)
        if root is None:
            return ""
        for driver in ("overlay", "vfs", "btrfs", "zfs"):
            names = self._podman_file(
                os.path.join(root, f"{driver}-containers", "containers.json"), owners)
            if cid in names:
                return names[cid]
        return ""

    def _podman_file(self, path: str, owners: tuple[int, ...] | None) -> dict[str, str]:
        try:
            st = os.stat(path)
        except OSError:
            return {}
        version = (st.st_mtime_ns, st.st_size)
        cached = self._podman_files.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        data = read_bounded(path, _PODMAN_JSON_MAX, owners)
        names: dict[str, str] = {}
        entries: Any = json.loads(data) if data else []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            cid, given = entry.get("id"), entry.get("names")
            if isinstance(cid, str) and isinstance(given, list) and given:
                names[cid] = _clean(given[0])
        if len(self._podman_files) >= 64:  # one per user running containers; bound it anyway
            self._podman_files.clear()
        self._podman_files[path] = (version, names)
        return names

    def _kubernetes(self, pod_uid: str, cid: str) -> str:
        # /var/log/pods/<namespace>_<pod>_<uid>/<container>/: names of the pod and its
        # containers. Kubernetes names cannot hold "_", so the split is unambiguous.
        pod_dir = ""
        with os.scandir(self._pods_log_root) as it:
            for n, entry in enumerate(it):
                if n >= _LISTING_MAX:
                    break
                if entry.name.endswith("_" + pod_uid):
                    pod_dir = entry.name
                    break
        parts = pod_dir.split("_")
        if len(parts) != 3:
            return ""
        namespace, pod, _ = parts
        container = self._container_of(namespace, pod, cid)
        if not container:
            # One container in the pod: that is the one (the pause container keeps no logs).
            subdirs = [e.name for e in os.scandir(os.path.join(self._pods_log_root, pod_dir))
                       if e.is_dir(follow_symlinks=False)]
            container = subdirs[0] if len(subdirs) == 1 else ""
        name = f"{namespace}/{pod}/{container}" if container else f"{namespace}/{pod}"
        return _clean(name)

    def _container_of(self, namespace: str, pod: str, cid: str) -> str:
        # /var/log/containers/<pod>_<namespace>_<container>-<id>.log links name each container.
        prefix, suffix = f"{pod}_{namespace}_", f"-{cid}.log"
        try:
            with os.scandir(self._containers_log_root) as it:
                for n, entry in enumerate(it):
                    if n >= _LISTING_MAX:
                        break
                    if entry.name.startswith(prefix) and entry.name.endswith(suffix):
                        return entry.name[len(prefix) : -len(suffix)]
        except OSError:
            pass
        return ""
