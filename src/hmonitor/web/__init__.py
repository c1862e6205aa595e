"""The dashboard: polls the agents, keeps history, serves pages and APIs."""
