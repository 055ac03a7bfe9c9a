"""Status of an AnalyticsJob: phases, conditions, progress text.

Conditions follow the Kubernetes convention (``type``, ``status`` "True"/"False",
``reason`` in CamelCase, a human ``message``, ``lastTransitionTime`` that only moves
when ``status`` flips).
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable, Mapping
from typing import Any


class Phase(enum.StrEnum):
    """Lifecycle of a job (DESIGN §7); the operator adds nothing of its own."""

    PENDING = "Pending"
    RESERVING = "Reserving"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class ConditionType(enum.StrEnum):
    """The conditions an AnalyticsJob carries."""

    VALID = "Valid"  # the spec passed validation
    SUBMITTED = "Submitted"  # the execution service accepted the job
    WORKERS_CREATED = "WorkersCreated"  # the worker Job exists
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


def now_iso(now: datetime.datetime | None = None) -> str:
    """An RFC 3339 UTC timestamp as Kubernetes writes them (second precision)."""
    moment = now or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: ConditionType, status: bool, reason: str, message: str, *, now: str
) -> dict[str, str]:
    """One condition entry."""
    return {
        "type": str(kind),
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }


def merge_conditions(
    existing: Iterable[Mapping[str, Any]], updates: Iterable[Mapping[str, str]]
) -> list[dict[str, Any]]:
    """Replace conditions by type; keep ``lastTransitionTime`` when the status is unchanged."""
    merged: dict[str, dict[str, Any]] = {str(c.get("type")): dict(c) for c in existing}
    for update in updates:
        previous = merged.get(update["type"])
        entry = dict(update)
        if previous is not None and previous.get("status") == update["status"]:
            entry["lastTransitionTime"] = previous.get(
                "lastTransitionTime", update["lastTransitionTime"]
            )
        merged[update["type"]] = entry
    return list(merged.values())


def progress_text(stage: int, stages: int) -> str:
    """``k/K`` for the printer column; ``-`` before the engine reports its stages."""
    return f"{stage}/{stages}" if stages > 0 else "-"
