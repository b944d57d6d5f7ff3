"""Storage occupancy over time: a ring buffer sampled from memory about once a minute.

The inventory keeps only the current ``used`` of each storage, and Detox cycles record occupancy
at their own times only; the plots and the drain ETA want a finer series. A sample is a few
numbers per storage, so a day of minutes costs kilobytes; a restart forgets it, which is fine
for a view of the recent past (the cycle history covers the longer one).

Sampling runs on ``loop.call_later`` callbacks rather than a task: a pending timer left when a
server's loop closes is dropped silently, where a pending task would be reported as destroyed,
and the callback holds the application only weakly, so a stopped server is not kept alive.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from inventory.inventory import Inventory
from inventory.server.state import STATE

INTERVAL = 60.0  # seconds between samples
KEEP = 24 * 60  # samples kept: a day at one a minute
RATE_WINDOW = 15 * 60.0  # seconds of samples a drain rate is measured over


@dataclass(frozen=True, slots=True)
class Sample:
    """Bytes used and capacity of each storage (by name) at one moment."""

    t: float
    used: dict[str, int]
    capacity: dict[str, int]
    status: dict[str, str]


@dataclass(slots=True)
class OccupancyHistory:
    """The ring buffer of samples, and where each draining storage started from."""

    keep: int = KEEP
    samples: deque[Sample] = field(init=False)
    drain_start: dict[str, tuple[float, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.samples = deque(maxlen=self.keep)

    def sample(self, inv: Inventory, now: float | None = None) -> Sample:
        """Record the storages as they are now; remember the bytes a drain started from."""
        t = time.time() if now is None else now
        storages = list(inv.storages.values())
        taken = Sample(t, {s.name: s.used for s in storages},
                       {s.name: s.capacity for s in storages},
                       {s.name: s.status for s in storages})
        self.samples.append(taken)
        for s in storages:
            if s.status == "draining":
                start = self.drain_start.get(s.name)
                if start is None or s.used > start[1]:  # a drain that grew restarts its bar
                    self.drain_start[s.name] = (t, s.used)
            else:
                self.drain_start.pop(s.name, None)
        return taken

    def series(self, name: str) -> list[tuple[float, float]]:
        """(time, occupancy) of one storage over the samples that know it."""
        return [(s.t, s.used[name] / s.capacity[name]) for s in self.samples
                if name in s.used and s.capacity.get(name)]

    def drain_rate(self, name: str, window: float = RATE_WINDOW) -> float | None:
        """Bytes per second by which ``used`` fell over the last ``window`` seconds while
        the storage was draining; None until a fall has been measured."""
        points = [(s.t, s.used[name]) for s in self.samples
                  if s.status.get(name) == "draining" and name in s.used]
        if len(points) < 2:
            return None
        end_t, end_used = points[-1]
        start_t, start_used = next(((t, u) for t, u in points if t >= end_t - window),
                                   points[0])
        if end_t <= start_t or start_used <= end_used:
            return None
        return (start_used - end_used) / (end_t - start_t)


_HISTORIES: weakref.WeakKeyDictionary[web.Application, OccupancyHistory] = (
    weakref.WeakKeyDictionary())


def history_of(app: web.Application) -> OccupancyHistory:
    """The application's history, sampling from now on (started by the first dashboard
    request: the dashboard registers routes only, so it has no start-up hook of its own)."""
    history = _HISTORIES.get(app)
    if history is None:
        history = _HISTORIES[app] = OccupancyHistory()
        state = app.get(STATE)
        if state is not None:
            history.sample(state.inventory)
        _schedule(weakref.ref(app), asyncio.get_running_loop().call_later)
    return history


def _schedule(app_ref: weakref.ref[web.Application],
              call_later: Callable[..., asyncio.TimerHandle]) -> None:
    call_later(INTERVAL, _tick, app_ref, call_later)


def _tick(app_ref: weakref.ref[web.Application],
          call_later: Callable[..., asyncio.TimerHandle]) -> None:
    app = app_ref()
    if app is None:
        return
    history, state = _HISTORIES.get(app), app.get(STATE)
    if history is None or state is None:
        return
    history.sample(state.inventory)
    _schedule(app_ref, call_later)

