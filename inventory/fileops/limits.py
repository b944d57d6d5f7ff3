"""Settings of the file operations engine (kept apart so reading a config stays cheap)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class FileOpsLimits:
    workers: int = 8  # operations running at once, overall
    per_storage: int = 4  # running at once that touch one storage (as source or target)
    max_attempts: int = 5
    retry_base: float = 10.0  # seconds before the 2nd attempt, doubling after each failure
    retry_max: float = 3600.0
    unreachable_after: int = 3  # consecutive failures before a storage is left alone ...
    unreachable_pause: float = 60.0  # ... for this long
    poll: float = 1.0
