"""Conditions on message content (filters and ``when``) and the router that picks routes."""

from __future__ import annotations

from hub.routes.conditions import Predicate, compile_all, compile_condition

__all__ = ["Predicate", "compile_condition", "compile_all"]
