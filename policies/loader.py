"""Load a policy: read the file, parse, check, compile. The one entry point callers need."""

from __future__ import annotations

from pathlib import Path

from .checker import check
from .errors import Diagnostic, PolicyError
from .model import Policy
from .parser import parse


def load_policy_text(text: str, filename: str = "<policy>") -> Policy:
    """Compile policy source ``text``; ``filename`` is only used in messages.

    Raises PolicyError (and nothing else) for any text that is not a valid policy."""
    try:
        return check(parse(text, filename))
    except RecursionError:
        raise PolicyError(
            [Diagnostic(filename, 1, 1, "the policy is nested too deeply to read")]
        ) from None


def load_policy(path: str | Path) -> Policy:
    """Read and compile the policy file at ``path``. An unreadable file is a PolicyError at 1:1
    too, so callers have one error to handle."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PolicyError([Diagnostic(name, 1, 1, f"cannot read the file: {reason}")]) from None
    return load_policy_text(text, name)
