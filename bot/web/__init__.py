"""Mission Control: the read-only web page of the fleet, /metrics, /healthz and the alert hooks,
served by `fleet run` when `[web] listen` is set (bot.web.server)."""
