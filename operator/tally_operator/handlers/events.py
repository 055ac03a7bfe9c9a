"""Kubernetes Events for an object's transitions (shown by ``kubectl describe``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf


@dataclasses.dataclass(frozen=True)
class Event:
    """One event to post: ``Normal`` or ``Warning``, a CamelCase reason, a message."""

    type: str
    reason: str
    message: str


def normal(reason: str, message: str) -> Event:
    """A ``Normal`` event."""
    return Event("Normal", reason, message)


def warning(reason: str, message: str) -> Event:
    """A ``Warning`` event."""
    return Event("Warning", reason, message)


def post(body: Mapping[str, Any], events: Iterable[Event]) -> None:
    """Queue ``events`` for ``body``; kopf posts them in the background if posting is on."""
    for event in events:
        kopf.event(
            cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message
        )
