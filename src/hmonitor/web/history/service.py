"""The spec's `gpu.History/GetHistory` gRPC service, served by the dashboard from its history store.

`HistReq.id` is the spec's key `<server name>_<gpu index>`; `timestamp` is the start of the
window in Unix seconds (values above 10^12 are nanoseconds, as the spec's own code stored them);
`type` is one of `util` (percent), `mem` (GPU memory used, bytes), `temp` (°C), `fan` (percent).
The answer is time-ordered: `t` in Unix seconds, `v` in the unit above, at most ~1,000 points.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from concurrent import futures

import grpc

from hmonitor._pb import hm_pb2, hm_pb2_grpc
from hmonitor.web.history.backend import HistoryBackend

log = logging.getLogger(__name__)

METRICS = ("util", "mem", "temp", "fan")
MAX_POINTS = 1000


def parse_key(key: str) -> tuple[str, int]:
    """`<server name>_<gpu index>` -> (name, index); the name itself may contain `_`."""
    name, sep, index = key.rpartition("_")
    # ASCII digits in int32 range: str.isdigit() also takes "²", and a huge number would
    # overflow SQLite's integers.
    if not sep or not name or not re.fullmatch(r"[0-9]{1,10}", index) or int(index) >= 2**31:
        raise ValueError(f"id {key[:200]!r} is not '<server name>_<gpu index>'")
    return name, int(index)


def window_start(timestamp: int) -> float:
    return timestamp / 1e9 if timestamp > 10**12 else float(timestamp)


class HistoryService(hm_pb2_grpc.HistoryServicer):
    def __init__(
        self,
        store: HistoryBackend,
        known_hosts: Callable[[], set[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._known = known_hosts
        self._clock = clock

    def GetHistory(self, request: hm_pb2.HistReq, context: grpc.ServicerContext) -> hm_pb2.HistResp:
        try:
            host, gpu = parse_key(request.id)
        except ValueError as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if request.type not in METRICS:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"type {request.type!r} is not one of {', '.join(METRICS)}",
            )
        if host not in self._known():
            context.abort(grpc.StatusCode.NOT_FOUND, f"no server named {host!r}")
        now = self._clock()
        t, v = self._store.series(
            host, gpu, request.type, window_start(request.timestamp), now, MAX_POINTS
        )
        return hm_pb2.HistResp(t=[int(x) for x in t], v=[max(0, round(x)) for x in v])


def start_history_server(
    addr: str, service: HistoryService, workers: int = 4
) -> tuple[grpc.Server, int]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="history"),
        options=[("grpc.so_reuseport", 0)],
    )
    hm_pb2_grpc.add_HistoryServicer_to_server(service, server)
    port = server.add_insecure_port(addr)
    server.start()
    log.info("History service on %s", addr)
    return server, port
