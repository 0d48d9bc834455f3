"""Helpers shared by tests (import with `from support import ...`; conftest.py files share one module name)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "samples"
CORPUS = ROOT.parent / "shared" / "corpus"


def need_peer(available: bool, reason: str) -> None:
    """Skip with a visible reason when a real peer is missing — except in CI, where that is a failure.

    Under ``HUB_UNIT=1`` (``make unit``, the quick tier) every test that needs a peer is skipped at once."""
    if os.environ.get("HUB_UNIT") == "1":
        pytest.skip(f"make unit skips what needs a peer ({reason}); make test runs it")
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must provide this peer: {reason}")
    pytest.skip(reason)


def write_config(folder: Path, hub_yaml: str, channels: dict[str, str]) -> Path:
    """A config folder with hub.yaml and channels/<name>.yaml files; returns the folder."""
    (folder / "channels").mkdir(parents=True, exist_ok=True)
    (folder / "hub.yaml").write_text(hub_yaml)
    for name, text in channels.items():
        (folder / "channels" / f"{name}.yaml").write_text(text)
    return folder


async def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", every: float = 0.02) -> None:
    """Poll ``cond`` until it is true; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"{what} not met in {timeout}s")
