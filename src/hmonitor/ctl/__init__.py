"""``hmonitor-ctl``: the cluster from a terminal, through the dashboard's JSON API or straight
from the agents. Light on purpose: the standard library plus grpcio/protobuf (direct mode only);
it never imports the dashboard (``hmonitor.web``) nor the agent (``hmonitor.agent``).

Modules: errors (exit codes), units (sizes, durations), config (where to connect), model (hosts
and GPUs as the client sees them), client (the dashboard over HTTP), agents (agents over gRPC),
select (which GPUs are free, which host fits), shapes (the ``--json`` contract), render (text),
top (the curses view), completion (shell scripts), commands and cli (the command line).
"""
