"""hmonitor-ctl's subscriptions and alerts as a user runs them: the installed console script
against the real hmonitor-web (waitress, its own poller and notifier) over a real agent on the
fake NVML, mailing a real SMTP server (aiosmtpd).

The lab: gpu-a (GPU 0 busy with a real process, GPU 1 free, 80 GiB each), gpu-down (nothing
listens: a host_down alert at once). Nobody else is mailed (no admin_emails), so every mail the
server gets is a subscriber's.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agentproc import Agent, free_port, start_agent
from ctlkit import TOKEN, Web, ctl_env, ok, one_line_error, run_ctl, start_web
from fakenvml import FakeGpu, FakeProc, nvml_env, write_config
from notifykit import SmtpServer

GIB = 1 << 30
DOWN = "host_down:gpu-down"


@dataclass
class Lab:
    web: Web
    agent: Agent
    config: Path
    smtp: SmtpServer
    home: Path
    down: str

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_ctl(args, ctl_env(self.home, HMONITOR_URL=self.web.url, HMONITOR_TOKEN=TOKEN))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, fake_nvml_lib: Path) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("ctl-subscribe")
    sleeper = subprocess.Popen(["sleep", "600"])
    config = tmp / "gpu-a.txt"
    write_config(config, [FakeGpu(mem_total=80 * GIB, mem_used=30 * GIB,
                                  procs=[FakeProc(sleeper.pid, 29 * GIB)]),
                          FakeGpu(mem_total=80 * GIB)])
    smtp = SmtpServer().start()
    agent = start_agent(tmp, env=nvml_env(fake_nvml_lib, config))
    web = None
    try:
        down = f"127.0.0.1:{free_port()}"
        web = start_web(tmp / "web", {"gpu-a": agent.target, "gpu-down": down},
                        smtp_host=smtp.host, smtp_port=smtp.port, smtp_security="none",
                        mail_from="hmonitor@lab.example", user_email="{user}@lab.example",
                        alert_host_down_minutes=0, notify_timeout=2, notify_retry_seconds=0.5)
        yield Lab(web, agent, config, smtp, tmp / "home", down)
    finally:
        if web is not None:
            web.stop()
        agent.stop()
        smtp.stop()
        sleeper.kill()
        sleeper.wait()


def test_subscribe_gets_one_mail_when_two_gpus_free_up(lab: Lab) -> None:
    assert one_line_error(lab.ctl("subscribe", "-n", "0"), 2) == (
        "hmonitor-ctl: the dashboard says: gpus must be a whole number from 1 to 64")
    made = ok(lab.ctl("subscribe", "-n", "2", "--min-mem", "40G", "--user", "carol"))
    sub_id = json.loads(ok(lab.ctl("subscriptions", "--json")))["subscriptions"][0]["id"]
    assert made == (f"subscription {sub_id}: one e-mail to carol@lab.example when there are 2 "
                    "free GPUs with 40 GiB free each on one host; then it ends\n")
    listed = json.loads(ok(lab.ctl("subscriptions", "--json")))["subscriptions"]
    assert [(s["email"], s["gpus"], s["min_free_bytes"], s["host"]) for s in listed] == [
        ("carol@lab.example", 2, 40 * GIB, "")]
    time.sleep(1.5)  # rounds with GPU 0 busy: one free GPU is not two
    assert lab.smtp.mails == []

    write_config(lab.config, [FakeGpu(mem_total=80 * GIB), FakeGpu(mem_total=80 * GIB)])
    mail = lab.smtp.wait(1, timeout=15)[0]
    assert mail.rcpt_tos == ["carol@lab.example"]
    assert "2 GPU(s) with 40 GiB free on gpu-a" in str(mail.message["Subject"])
    assert "CUDA_VISIBLE_DEVICES=0,1" in mail.message.get_content()
    assert ok(lab.ctl("subscriptions")) == "no subscriptions\n"
    assert json.loads(ok(lab.ctl("subscriptions", "--json"))) == {"subscriptions": []}
    time.sleep(1.5)  # more rounds with the GPUs free: told once
    assert len(lab.smtp.mails) == 1


def test_unsubscribe_and_the_one_line_errors(lab: Lab) -> None:
    made = json.loads(ok(lab.ctl("subscribe", "-n", "8", "--host", "gpu-a", "--email",
                                 "dave@lab.example", "--json")))
    assert (made["host"], made["gpus"], made["by"]) == ("gpu-a", 8, "API 127.0.0.1")
    assert ok(lab.ctl("unsubscribe", str(made["id"]))) == f"removed subscription {made['id']}\n"
    assert one_line_error(lab.ctl("unsubscribe", str(made["id"])), 5) == (
        f"hmonitor-ctl: no subscription {made['id']}")
    assert one_line_error(lab.ctl("subscribe", "--host", "gpu-z"), 5) == (
        "hmonitor-ctl: no host matches 'gpu-z' (hosts: gpu-a, gpu-down)")
    direct = run_ctl(["--agent", f"gpu-a={lab.agent.target}", "subscribe", "-n", "2"],
                     ctl_env(lab.home))
    assert one_line_error(direct, 2) == (
        "hmonitor-ctl: subscribe needs the dashboard (the agents keep no subscriptions): set "
        "HMONITOR_URL and leave out --agent")


def test_alerts_ack_and_silence(lab: Lab) -> None:
    alerts = {a["id"]: a for a in json.loads(ok(lab.ctl("alerts", "--json")))["alerts"]}
    assert alerts[DOWN]["state"] == "firing" and "gpu-down is down" in alerts[DOWN]["text"]
    assert ok(lab.ctl("ack", DOWN)) == f"acknowledged {DOWN}: no more reminders until it ends\n"
    assert ok(lab.ctl("silence", DOWN, "--minutes", "30")).startswith(f"silenced {DOWN} until ")
    row = next(line for line in ok(lab.ctl("alerts")).splitlines() if line.startswith(DOWN))
    assert row.split()[1] == "silenced"
    assert "acknowledged by API 127.0.0.1; silenced until" in row
    alert = {a["id"]: a for a in json.loads(ok(lab.ctl("alerts", "--json")))["alerts"]}[DOWN]
    assert 29 * 60 < alert["silenced_until"] - time.time() <= 30 * 60
    assert ok(lab.ctl("unsilence", DOWN)) == f"{DOWN} is no longer silenced\n"
    assert one_line_error(lab.ctl("ack", "host_down:gpu-z"), 5) == (
        "hmonitor-ctl: no firing alert 'host_down:gpu-z'")
