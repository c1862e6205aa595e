"""The agent: collects this host's GPUs, processes, accounts and disks, serves them over gRPC."""
