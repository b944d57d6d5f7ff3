"""Credentials kept out of what readers see: storage configs, operation errors, reports, logs.

A storage's config holds what its backend needs to reach it: S3 keys, a session token, and
sometimes credentials written into an endpoint URL (``https://KEY:SECRET@host``). Readers may
see a storage's config (where it is, how it is tuned) but never those. Two rules, one module:

- keys that name a credential (``secret``, ``password``, ``token``, ``credential``,
  ``access_key``, ...) are left out of a config shown to readers;
- the user and password part of any URL is replaced by ``***``, in config values and in any
  text (an error naming the endpoint it could not reach, a log line), and so are bearer tokens
  (a request quoted in a log line).

Operators get configs whole where they need them (a Consistency run lists storages with their
credentials; see ``feed.storage_wire``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_WORDS = ("secret", "password", "passwd", "token", "credential", "access_key",
                "accesskey", "private_key")
MASK = "***"
# scheme://userinfo@ : userinfo is what RFC 3986 allows before the host (no / ? # @ or space)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s\"'<>]+@")
_SHORTEST_SECRET = 4  # shorter values would mask ordinary words of a message
# a bearer token, and DLM's own token form, wherever a message quotes a request's header (aiohttp
# logs a request it cannot parse with its raw headers: a valid token went into the log)
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"'\\,]+")
_DLM_TOKEN = re.compile(r"dlm_[A-Za-z0-9_-]{16,}")


def is_secret_key(key: str) -> bool:
    """Whether a config key names a credential."""
    low = key.lower()
    return any(word in low for word in SECRET_WORDS)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL's user:password replaced by ``***`` and each of ``secrets``
    (credential values, e.g. from ``secrets_of``) masked wherever it appears."""
    if "@" in text:
        text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    if "dlm_" in text:
        text = _DLM_TOKEN.sub("dlm_" + MASK, text)
    for secret in secrets:
        if len(secret) >= _SHORTEST_SECRET and secret in text:
            text = text.replace(secret, MASK)
    return text


def _public_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return public_config(value)
    if isinstance(value, list):
        return [_public_value(v) for v in value]
    return value


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A storage's config as readers see it: no credential keys, no credentials in URLs."""
    return {k: _public_value(v) for k, v in config.items() if not is_secret_key(k)}


def secrets_of(config: Mapping[str, Any]) -> set[str]:
    """The credential values a config holds (its secret keys' values, and the user and
    password of its URLs): what an error message about that storage must not show."""
    found: set[str] = set()
    for key, value in config.items():
        if isinstance(value, dict):
            found |= secrets_of(value)
        elif isinstance(value, str):
            if is_secret_key(key):
                found.add(value)
            for match in _USERINFO.finditer(value):
                userinfo = match.group(0)[len(match.group(1)):-1]
                found.add(userinfo)
                found.update(part for part in userinfo.split(":", 1) if part)
    return found


def storage_secrets(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The credential values of several storages, longest first (a secret that contains
    another is masked whole)."""
    found: set[str] = set()
    for config in configs:
        found |= secrets_of(config)
    return sorted(found, key=len, reverse=True)
