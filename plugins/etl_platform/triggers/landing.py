"""A trigger that waits for one landing file until a deadline, in the triggerer (no worker slot held)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LandingFileTrigger(BaseTrigger):
    """Fire once: when ``path`` is a file, or when ``deadline`` passes without it.

    The event's payload is ``{"path", "present", "deadline", "checked_at"}``; ``present`` is
    False when the deadline passed first. The file is looked for every ``poke_interval``
    seconds (and once more at the deadline), with a blocking ``stat`` moved off the event loop.

    :param path: the file (a local or mounted path).
    :param deadline: ISO 8601 timestamp with a timezone.
    """

    def __init__(self, path: str, deadline: str, poke_interval: float = 60.0) -> None:
        super().__init__()
        self.path = path
        self.deadline = deadline
        self.poke_interval = float(poke_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("etl_platform.triggers.landing.LandingFileTrigger",
                {"path": self.path, "deadline": self.deadline, "poke_interval": self.poke_interval})

    def _event(self, present: bool) -> TriggerEvent:
        return TriggerEvent({"path": self.path, "present": present, "deadline": self.deadline,
                             "checked_at": _now().isoformat()})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = dt.datetime.fromisoformat(self.deadline)
        while True:
            if await asyncio.to_thread(os.path.isfile, self.path):
                self.log.info("Found %s", self.path)
                yield self._event(True)
                return
            left = (deadline - _now()).total_seconds()
            if left <= 0:
                self.log.info("No %s by its deadline %s", self.path, self.deadline)
                yield self._event(False)
                return
            await asyncio.sleep(min(self.poke_interval, left + 0.01))
