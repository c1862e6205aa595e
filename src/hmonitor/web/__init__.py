"""The dashboard, ``hmonitor-web``: polls the agents, keeps history, serves pages and APIs.

Where to start reading: ``app.py`` (how it is wired), ``poller.py`` (how agents are polled),
``history/`` (what is kept), ``pages/`` and ``api/`` (what is served). Domain modules (settings,
poller, channels, bounds, notes, sessions, reports, rules, history) never import Flask; pages and
API import the domain, never each other. Nothing is wired here.
"""
