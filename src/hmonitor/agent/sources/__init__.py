"""Data sources of the agent; none of them imports the server."""
