"""The /alerts page and /api/v1/notifications on the real app: silences set ahead, the API's
alert ids with slashes, flash messages for what is not there."""

from __future__ import annotations

from pathlib import Path

from builders import down, gpu, host_info, up
from webkit import BEARER, csrf_for, login, make_app

from hmonitor.web.state import get_state


def test_a_silence_set_ahead_is_listed_and_can_be_lifted(tmp_path: Path) -> None:
    app = make_app(tmp_path, [up("gpu01", host_info("gpu01", [gpu(0)]))])
    client = app.test_client()
    resp = client.post("/api/v1/alerts/disk_full:gpu01:/data/silence", json={"minutes": 90},
                       headers=BEARER)
    assert resp.status_code == 200 and resp.get_json()["silenced"] == "disk_full:gpu01:/data"
    found = client.get("/api/v1/notifications", headers=BEARER).get_json()
    assert [s["id"] for s in found["silences"]] == ["disk_full:gpu01:/data"]
    login(client)
    page = client.get("/alerts").text
    assert 'id="ahead-table"' in page and "disk_full:gpu01:/data" in page
    token = csrf_for(client, "/alerts")
    client.post("/alerts/unsilence", data={"id": "disk_full:gpu01:/data", "csrf_token": token})
    page = client.get("/alerts").text
    assert "is no longer silenced" in page and 'id="ahead-table"' not in page
    client.post("/alerts/unsilence", data={"id": "disk_full:gpu01:/data", "csrf_token": token})
    assert "was not silenced" in client.get("/alerts").text
    get_state(app).close()


def test_a_host_down_shows_as_firing_after_a_round(tmp_path: Path) -> None:
    app = make_app(tmp_path, [down("gpu02", "connection refused")],
                   alert_host_down_minutes=0)
    state = get_state(app)
    for listener in state.round_listeners:
        listener(state.poller.hosts(), 0.0)
    client = app.test_client()
    login(client)
    page = client.get("/alerts").text
    assert "gpu02 is down: connection refused" in page and "Firing <span" in page
    bad = client.post("/api/v1/alerts/no_such_rule:x/silence", json={"minutes": 5},
                      headers=BEARER)
    assert bad.status_code == 400 and "not an alert id" in bad.get_json()["error"]
    state.close()
