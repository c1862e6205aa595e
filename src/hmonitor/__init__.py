"""hmonitor: a GPU-cluster monitor — a gRPC agent per GPU server and a web dashboard."""

__version__ = "0.1.0"
