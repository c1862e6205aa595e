"""Notifications end to end: the real ``hmonitor-web`` (its own poller) over real agents on the
fake NVML, telling a real SMTP server (aiosmtpd) and real HTTP receivers.

An agent stops: one e-mail to the admins and one post to each webhook say its host is down; a
webhook that hangs and one that answers 500 delay nobody (the 500 one gets it on a retry); the
dashboard restarts in the middle and sends nothing again; the agent comes back: one message says
so. A user subscribes to "2 GPUs with 40 GiB" and gets one e-mail when they free up.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agentproc import Agent, start_agent, wait_listening
from ctlkit import TOKEN, WEB, Web, start_web
from fakenvml import FakeGpu, FakeProc, nvml_env, write_config
from notifykit import HttpReceiver, SmtpServer, wait_for

GIB = 1 << 30


def api(web: Web, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        f"{web.url}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


@dataclass
class Lab:
    folder: Path
    agents: dict[str, Agent]
    env: Callable[[str], dict[str, str]]
    configs: dict[str, Path]
    smtp: SmtpServer
    hook: HttpReceiver
    flaky: HttpReceiver
    hung_url: str
    web: Web | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "smtp_host": self.smtp.host, "smtp_port": self.smtp.port, "smtp_security": "none",
            "mail_from": "hmonitor@lab.example", "admin_emails": ["admins@lab.example"],
            "webhooks": [self.hook.url("/hook"), self.hung_url, self.flaky.url("/flaky")],
            "user_email": "{user}@lab.example", "alert_host_down_minutes": 0,
            "notify_timeout": 2, "notify_retry_seconds": 0.5, "interval": 0.5,
        }

    def start_web(self) -> Web:
        servers = {name: a.target for name, a in self.agents.items()}
        self.web = start_web(self.folder / "web", servers, **self.settings())
        return self.web

    def restart_agent(self, name: str) -> None:
        port = self.agents[name].port  # back on the port the dashboard polls
        agent = start_agent(self.folder, env={**self.env(name), "GOHM_ADDR": f"127.0.0.1:{port}"},
                            wait=False)
        agent.port = port
        wait_listening(agent)
        self.agents[name] = agent


@pytest.fixture
def lab(tmp_path: Path, fake_nvml_lib: Path, smtp_server: Callable[..., SmtpServer],
        http_receiver: Callable[..., HttpReceiver], silent_port: int) -> Iterator[Lab]:
    sleeper = subprocess.Popen(["sleep", "600"])
    configs = {"gpu-a": tmp_path / "a.txt", "gpu-b": tmp_path / "b.txt"}
    write_config(configs["gpu-a"], [FakeGpu()])
    write_config(configs["gpu-b"], [FakeGpu(mem_total=80 * GIB, mem_used=30 * GIB,
                                            procs=[FakeProc(sleeper.pid, 29 * GIB)]),
                                    FakeGpu(mem_total=80 * GIB)])

    def env(name: str) -> dict[str, str]:
        return nvml_env(fake_nvml_lib, configs[name])

    agents = {name: start_agent(tmp_path, env=env(name)) for name in configs}
    flaky = http_receiver()
    flaky.replies("/flaky", 500, 200)  # the first post fails, the retry lands
    made = Lab(tmp_path, agents, env, configs, smtp_server(), http_receiver(), flaky,
               f"http://127.0.0.1:{silent_port}/hung")
    try:
        yield made
    finally:
        if made.web is not None:
            made.web.stop()
        for agent in made.agents.values():
            agent.stop()
        sleeper.kill()
        sleeper.wait()


def subjects(smtp: SmtpServer) -> list[str]:
    return [str(m.message["Subject"]) for m in smtp.mails]


def test_a_host_down_and_back_told_once_each_across_a_restart(lab: Lab) -> None:
    web = lab.start_web()
    time.sleep(1.5)  # a few rounds with everyone up: nothing to tell
    assert lab.smtp.mails == [] and lab.hook.requests == []

    lab.agents["gpu-a"].stop()
    down = lab.smtp.wait(1, timeout=15)
    assert subjects(lab.smtp) == [
        "[hmonitor] New: gpu-a is down: connection refused (no agent listening on that port?)"]
    assert down[0].rcpt_tos == ["admins@lab.example"]
    assert down[0].message["From"] == "hmonitor@lab.example"
    assert "NEW       gpu-a is down" in down[0].message.get_content()
    posted = lab.hook.wait(1, timeout=5)  # not held up by the hung webhook
    assert posted[0].json()["events"][0] | {"since": None} == {
        "event": "firing", "id": "host_down:gpu-a", "rule": "host_down", "host": "gpu-a",
        "user": "", "text": down[0].message["Subject"].removeprefix("[hmonitor] New: "),
        "since": None}
    # The webhook answering 500 got it on its second try, the hung one is retried; neither
    # held up the e-mail or the good webhook above.
    assert lab.flaky.wait(2, timeout=10)[1].json()["events"][0]["id"] == "host_down:gpu-a"

    def delivery(channel: str) -> dict[str, Any]:
        found = api(web, "GET", "/api/v1/notifications")["deliveries"]
        return next(d for d in found if d["channel"] == channel)

    wait_for(lambda: delivery("webhook:2")["status"] == "sent", 10, "the retried webhook")
    assert delivery("webhook:2")["attempts"] == 2
    wait_for(lambda: delivery("webhook:1")["attempts"] >= 1, 10, "the hung webhook's try")
    hung = delivery("webhook:1")
    assert hung["status"] == "pending" and "within 2 s" in hung["last_error"], hung
    notifications = api(web, "GET", "/api/v1/notifications")
    alerts = {a["id"]: a for a in notifications["alerts"]}
    assert alerts["host_down:gpu-a"]["state"] == "firing"

    web.stop()  # the dashboard restarts in the middle of the alert
    web = lab.start_web()
    time.sleep(2.5)  # rounds with gpu-a still down: already told
    assert len(lab.smtp.mails) == 1
    assert len(lab.hook.requests) == 1

    lab.restart_agent("gpu-a")
    back = lab.smtp.wait(2, timeout=15)[1]
    assert str(back.message["Subject"]).startswith("[hmonitor] Resolved: gpu-a is down")
    assert "over after" in back.message.get_content()
    assert lab.hook.wait(2, timeout=5)[1].json()["events"][0]["event"] == "resolved"
    time.sleep(1.5)
    assert len(lab.smtp.mails) == 2  # and nothing more


def test_a_subscription_gets_one_mail_when_two_gpus_free_up(lab: Lab) -> None:
    web = lab.start_web()
    made = api(web, "POST", "/api/v1/subscriptions",
               {"gpus": 2, "min_free_gib": 40, "user": "carol"})
    assert (made["email"], made["gpus"], made["min_free_bytes"]) == (
        "carol@lab.example", 2, 40 * GIB)
    time.sleep(1.5)  # GPU 0 of gpu-b is busy: only one is free
    assert lab.smtp.mails == []
    write_config(lab.configs["gpu-b"], [FakeGpu(mem_total=80 * GIB), FakeGpu(mem_total=80 * GIB)])
    mail = lab.smtp.wait(1, timeout=15)[0]
    assert mail.rcpt_tos == ["carol@lab.example"]
    assert "2 GPU(s) with 40 GiB free on gpu-b" in str(mail.message["Subject"])
    assert "CUDA_VISIBLE_DEVICES=0,1" in mail.message.get_content()
    assert api(web, "GET", "/api/v1/subscriptions")["subscriptions"] == []
    time.sleep(1.5)
    assert len(lab.smtp.mails) == 1


def test_bad_notification_settings_stop_the_start_with_one_line(tmp_path: Path) -> None:
    settings = tmp_path / "settings.py"
    settings.write_text("servers = {'a': '127.0.0.1:9'}\ntoken = 't'\n"
                        "webhooks = ['hooks.example.org/in']\n")
    done = subprocess.run([str(WEB), "--settings", str(settings), "--port", "0"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"hmonitor-web: {settings}:3: webhooks: webhook URL hooks.example.org… must start "
        "with http:// or https://")
