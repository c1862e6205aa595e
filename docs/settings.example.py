# settings.py for hmonitor-web — the spec's three keys, then every optional one with its default.
# The file is Python; hmonitor-web checks every key and names the bad one if something is wrong.

# Agents to poll: display name -> "host:port" of its `hmonitor`.
servers = {
    "gpu01": "10.1.0.1:9203",
    "gpu02": "10.1.0.2:9203",
}
# Signs the login cookie. Omit it and a random one is generated once and kept in the data dir.
secret = "change me to a long random string"
# What people type on the login page (also `Authorization: Bearer <token>` for the JSON API).
token = "123456"

# --- optional -------------------------------------------------------------------------------
# interval = 10             # seconds between polling rounds
# timeout = 3               # deadline of each agent call, seconds
# agent_token = ""          # sent as RequestInfo.token to agents started with GOHM_TOKEN
# tls_ca = "ca.pem"         # reach agents over TLS, trusting this CA (paths relative to this file)
# tls_cert = "client.pem"   # client certificate + key, for agents that require mutual TLS
# tls_key = "client.key"
# tls_server_name = "hmonitor-agent"   # name to expect in agent certificates, if not the host's
# session_lifetime = 604800 # seconds a login lasts (7 days); logging out ends it at once
# failed_login_limit = "10/minute"   # wrong logins or Bearer tokens per client address, then 429
# data_dir = "data"         # notes, notice, history, generated secret (default: this folder)
# history_addr = "127.0.0.1:9204"      # where the History gRPC service listens
# history_raw_days = 10     # full-resolution history kept this long, then downsampled
# history_keep_days = 365   # downsampled history kept this long
# idle_util_threshold = 5   # % utilization under which a GPU holding memory counts as idle
# idle_minutes = 120        # ... for this long before its process is flagged as an idle hog
# history_backend = "sqlite"   # or "prometheus": pages, API, History gRPC read history there
# prometheus_url = "http://prometheus:9090"   # PromQL API base (or VictoriaMetrics, Thanos, Mimir)
# prometheus_bearer_token_file = "prom.token"   # its content sent as a Bearer token
# prometheus_username = "hmonitor"   # basic auth instead of a token, with prometheus_password
# prometheus_password = ""
# prometheus_timeout = 5    # seconds: the deadline of every history query
# prometheus_job = "hmonitor"   # the scrape job read ("hmonitor-web" when scraping the dashboard)
# metrics_token = "..."     # a Bearer token for /metrics alone (Prometheus scraping the dashboard)

# --- notifications (README, "Notifications"); nothing is sent without these ------------------
# smtp_host = "smtp.lab.example"
# smtp_port = 587           # default: 587 with "starttls", 465 with "ssl", 25 with "none"
# smtp_security = "starttls"   # "none", "starttls" or "ssl"
# smtp_user = "hmonitor"    # SMTP login, with smtp_password
# smtp_password = ""
# mail_from = "hmonitor@lab.example"
# admin_emails = ["gpu-admins@lab.example"]
# webhooks = ["https://chat.lab.example/hooks/xyz"]   # or {"url": ..., "format": "json"|"slack",
#                                                     #     "timeout": 10, "proxy": "http://..."}
# apprise_urls = []         # any Apprise URL (pip install 'hmonitor[notify]')
# user_email = "{user}@lab.example"   # or a dict {"alice": "alice@uni.example"}
# user_email_opt_out = []   # users never mailed
# alert_host_down_minutes = 5   # 0: at the first failed round
# alert_remind_minutes = 240    # reminders until acknowledged; 0: none
# notify_timeout = 10       # seconds: each delivery's deadline
# notify_retry_seconds = 30 # first retry after a failure; then doubled, at most 1 h; ~8 h in all
# alert_rules = {           # each: "enabled", "to" ("admins", "user", "both"), its own options
#     "host_down": {"to": "admins"},
#     "disk_full": {"percent": 90, "to": "admins"},
#     "idle_hog": {"to": "both"},
#     "account_expiring": {"days": 14, "all_users": False, "to": "both"},
#     "gpu_lost": {"to": "admins"},
#     "gpu_hot": {"celsius": 90, "to": "admins"},
#     "user_gpus": {"enabled": False, "max": 8, "to": "both"},
# }
