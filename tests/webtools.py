"""Helpers for the Mission Control tests: the [web] config, a free port, and readers of
Prometheus's and Alertmanager's HTTP APIs."""

from __future__ import annotations

import socket

ALERT_TOKEN = "alert-token-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def web_extra(port: int, *, alertmanager_url: str = "") -> str:
    """A [web] table listening on `port`, with an Alertmanager source `prom` and a script
    source `scripts`, both with ALERT_TOKEN (read from ${ALERT_TOKEN})."""
    return f"""
[web]
listen = "127.0.0.1:{port}"
metrics_from = ["127.0.0.1/32"]

[[web.sources]]
id = "prom"
kind = "alertmanager"
token = "${{ALERT_TOKEN}}"
url = "{alertmanager_url}"

[[web.sources]]
id = "scripts"
kind = "alert"
token = "${{ALERT_TOKEN}}"

[alerting]
group_wait = "1s"
group_interval = "1s"
"""


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
