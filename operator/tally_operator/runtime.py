"""What the handlers share at run time: configuration, clients, and lost-worker news.

One :class:`Runtime` is built at start-up and handed to kopf as ``memo.runtime``;
kopf gives every handler a shallow copy of that memo, so they all see the same
object. Tests build it with a fake execution client.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from typing import Any

from tally_operator.execution import ExecutionClient
from tally_operator.kube import KubeApi
from tally_operator.settings import OperatorConfig

JobKey = tuple[str, str]  # (namespace, AnalyticsJob name)


@dataclasses.dataclass(frozen=True)
class LostWorker:
    """A worker pod lost to preemption, eviction, drain or deletion."""

    uid: str
    pod: str
    partition: int | None
    reason: str


class WorkerLossBook:
    """Lost workers reported by the pod watcher, waiting for their job's monitor.

    The pod watcher records a loss and wakes the monitor at once; the monitor takes
    the pending losses on its next step and is the only writer of the restart count.
    """

    def __init__(self) -> None:
        self._pending: dict[JobKey, dict[str, LostWorker]] = {}
        self._wakeups: dict[JobKey, asyncio.Event] = {}

    def record(self, key: JobKey, loss: LostWorker) -> None:
        """Remember ``loss`` (once per pod uid) and wake the job's monitor."""
        self._pending.setdefault(key, {}).setdefault(loss.uid, loss)
        self._wakeup(key).set()

    def take(self, key: JobKey) -> list[LostWorker]:
        """Hand over and forget the pending losses of ``key``."""
        return list(self._pending.pop(key, {}).values())

    def put_back(self, key: JobKey, losses: list[LostWorker]) -> None:
        """Return losses that could not be recorded in the job's status."""
        for loss in losses:
            self._pending.setdefault(key, {}).setdefault(loss.uid, loss)

    def forget(self, key: JobKey) -> None:
        """Drop everything about a finished or deleted job."""
        self._pending.pop(key, None)
        self._wakeups.pop(key, None)

    async def wait(self, key: JobKey, *, timeout: float, stopped: Awaitable[Any]) -> None:
        """Sleep until a loss arrives, ``stopped`` resolves, or ``timeout`` passes."""
        wakeup = self._wakeup(key)
        if wakeup.is_set():
            wakeup.clear()
            return
        waiters = {
            asyncio.ensure_future(wakeup.wait()),
            asyncio.ensure_future(stopped),
        }
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        wakeup.clear()

    def _wakeup(self, key: JobKey) -> asyncio.Event:
        return self._wakeups.setdefault(key, asyncio.Event())


@dataclasses.dataclass
class Runtime:
    """The operator's shared state, passed to kopf as ``memo.runtime``."""

    config: OperatorConfig
    execution: ExecutionClient
    kube: KubeApi
    losses: WorkerLossBook = dataclasses.field(default_factory=WorkerLossBook)

    async def close(self) -> None:
        """Release the clients' connections."""
        await self.execution.close()
        await self.kube.close()
