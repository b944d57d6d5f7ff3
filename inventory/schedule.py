"""Cycles the server launches itself (``schedule:`` in the config): Detox every 4 hours, say.

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
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("dlm.schedule")
KINDS = ("detox", "dealer")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ScheduleError(ValueError):
    """The ``schedule:`` section of the config is wrong; the message says where and how."""


@dataclass(slots=True, frozen=True)
class Job:
    kind: str  # "detox"
    policy: str
    every: float  # seconds
    dry_run: bool = False


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
        unknown = set(entry) - set(KINDS) - {"every", "dry_run"}
        if len(kinds) != 1 or unknown:
            raise ScheduleError(f"{at}: expected one of {', '.join(KINDS)} with a policy file, "
                                f"plus every (and optionally dry_run)")
        policy = entry[kinds[0]]
        if not isinstance(policy, str) or not os.path.isfile(policy):
            raise ScheduleError(f"{at}: {kinds[0]}: no policy file {policy!r}")
        match = _DURATION.match(str(entry.get("every", "")))
        if not match or float(match.group(1)) <= 0:
            raise ScheduleError(f"{at}: every: expected a duration like 30m, 4h or 1d")
        jobs.append(Job(kinds[0], os.path.abspath(policy),
                        float(match.group(1)) * _SECONDS[match.group(2)],
                        bool(entry.get("dry_run", False))))
    return jobs


def internal_token() -> str:
    return "dlm_internal_" + secrets.token_urlsafe(32)


class Schedule:
    """Runs each job's process every period, the first run right after start."""

    def __init__(self, jobs: list[Job], url: str, token: str) -> None:
        self.jobs = jobs
        self.url = url
        self.token = token
        self._tasks: list[asyncio.Task] = []
        self.runs: dict[int, int] = {}

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
            await self._run(index, job)
            await asyncio.sleep(job.every)

    async def _run(self, index: int, job: Job) -> None:
        args = [sys.executable, "-m", "inventory.cli", job.kind, "--policy", job.policy,
                "--once", "--json", "--url", self.url]
        if job.dry_run:
            args.append("--dry-run")
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
            log.info("scheduled cycle done", extra={"job": job.kind, "policy": job.policy,
                                                    "output_bytes": len(out)})
        else:
            log.error("scheduled cycle failed", extra={
                "job": job.kind, "policy": job.policy, "status": proc.returncode,
                "error": err.decode(errors="replace").strip()[-2000:]})
