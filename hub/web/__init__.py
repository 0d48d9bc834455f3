"""The web app: JSON API, dashboard, /metrics, /healthz (issue 7). ``await start(engine)`` → object with ``stop()``."""

from __future__ import annotations
