"""Cycles the server launches itself (``schedule:`` in the config): Detox every 4 hours, Dealer
every 30 minutes, a consistency check of each storage weekly.

Each run is a separate ``dlm detox --once`` process, as an operator would start it by hand, so
its CPU work never runs in the server. The child authenticates with a token that exists only in
this server's memory for its lifetime (it is not stored and does not end open mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dlm.schedule")
KINDS = ("detox", "dealer", "consistency")
POLICY_KINDS = ("detox", "dealer")  # the others name a storage, not a policy file
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ScheduleError(ValueError):
    """The ``schedule:`` section of the config is wrong; the message says where and how."""


@dataclass(slots=True, frozen=True)
class Job:
    kind: str  # "detox" | "dealer" | "consistency"
    target: str  # the policy file, or the storage to check
    every: float  # seconds
    dry_run: bool = False
    fix: bool = False  # consistency: repair what was found

    def args(self, url: str) -> list[str]:
        if self.kind == "consistency":
            out = [self.kind, self.target, "--url", url]
            return [*out, "--fix"] if self.fix else out
        out = [self.kind, "--policy", self.target, "--once", "--json", "--url", url]
        return [*out, "--dry-run"] if self.dry_run else out


def parse_schedule(entries: Any, where: str) -> list[Job]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ScheduleError(f"{where}: schedule: expected a list of {{detox: FILE, every: 4h}}")
    jobs = []
    for i, entry in enumerate(entries):
        at = f"{where}: schedule[{i}]"
        if not isinstance(entry, dict):
            raise ScheduleError(f"{at}: expected a mapping")
        kinds = [k for k in KINDS if k in entry]
        unknown = set(entry) - set(KINDS) - {"every", "dry_run", "fix"}
        if len(kinds) != 1 or unknown:
            raise ScheduleError(f"{at}: expected one of {', '.join(KINDS)} (a policy file, or "
                                f"for consistency a storage name), plus every (and optionally "
                                f"dry_run, fix)")
        kind, target = kinds[0], entry[kinds[0]]
        if kind in POLICY_KINDS:
            if not isinstance(target, str) or not os.path.isfile(target):
                raise ScheduleError(f"{at}: {kind}: no policy file {target!r}")
            target = os.path.abspath(target)
        elif not isinstance(target, str) or not target:
            raise ScheduleError(f"{at}: consistency: expected a storage name")
        match = _DURATION.match(str(entry.get("every", "")))
        if not match or float(match.group(1)) <= 0:
            raise ScheduleError(f"{at}: every: expected a duration like 30m, 4h or 1d")
        jobs.append(Job(kind, target, float(match.group(1)) * _SECONDS[match.group(2)],
                        bool(entry.get("dry_run", False)), bool(entry.get("fix", False))))
    return jobs


def internal_token() -> str:
    return "dlm_internal_" + secrets.token_urlsafe(32)


class Schedule:
    """Runs each job's process every period, the first run right after start."""

    def __init__(self, jobs: list[Job], url: str, token: str,
                 cannot_write: Callable[[], str | None] | None = None) -> None:
        self.jobs = jobs
        self.url = url
        self.token = token
        # why the server cannot write now (its write claim lost), or None: a cycle run then
        # would only be refused, so it is skipped, logged once per job and pause
        self.cannot_write = cannot_write or (lambda: None)
        self._skipping: set[int] = set()
        self._tasks: list[asyncio.Task] = []
        self.runs: dict[int, int] = {}
        # Consistency lists whole storages: one at a time, whatever the schedule says.
        self._listing = asyncio.Lock()

    def start(self) -> None:
        for index, job in enumerate(self.jobs):
            self._tasks.append(asyncio.create_task(self._loop(index, job),
                                                   name=f"dlm-schedule-{index}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self, index: int, job: Job) -> None:
        while True:
            reason = self.cannot_write()
            if reason is None:
                if index in self._skipping:
                    self._skipping.discard(index)
                    log.info("scheduled cycles resumed", extra={"job": job.kind,
                                                                "target": job.target})
                await self._run(index, job)
            elif index not in self._skipping:
                self._skipping.add(index)
                log.warning("scheduled cycle skipped: the server cannot write", extra={
                    "job": job.kind, "target": job.target, "reason": reason})
            await asyncio.sleep(job.every)

    async def _run(self, index: int, job: Job) -> None:
        if job.kind == "consistency":
            async with self._listing:
                await self._spawn(index, job)
        else:
            await self._spawn(index, job)

    async def _spawn(self, index: int, job: Job) -> None:
        args = [sys.executable, "-m", "inventory.cli", *job.args(self.url)]
        env = {**os.environ, "DLM_TOKEN": self.token}
        proc = await asyncio.create_subprocess_exec(*args, env=env,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        self.runs[index] = self.runs.get(index, 0) + 1
        if proc.returncode == 0:
            log.info("scheduled cycle done", extra={"job": job.kind, "target": job.target,
                                                    "output_bytes": len(out)})
        elif job.kind == "consistency" and proc.returncode == 3:
            log.warning("consistency safety limit held: nothing fixed", extra={
                "storage": job.target, "error": err.decode(errors="replace").strip()[-2000:]})
        else:
            log.error("scheduled cycle failed", extra={
                "job": job.kind, "target": job.target, "status": proc.returncode,
                "error": err.decode(errors="replace").strip()[-2000:]})
