"""S3 settings from a storage's root and config, the aiobotocore client, and error mapping.

A storage of kind ``s3`` has ``root`` = ``"bucket"`` or ``"bucket/prefix"`` (an ``s3://`` in
front is accepted) and ``config`` with ``endpoint_url``, ``region``, ``access_key``,
``secret_key`` (and optional ``session_token`` and tuning keys below). Whatever the config does
not say comes from the usual AWS environment (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``...), as
botocore does. Unknown config keys are refused: a typo must not silently become a default.

The botocore options are the ones that work against real S3 and S3-compatible servers alike
(docs/storage.md): checksums only when an operation requires one (we send Content-MD5 ourselves
and verify adler32 end to end), SigV4 always, path-style addressing for custom endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import aiohttp
import botocore.exceptions as bce
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

from inventory.redact import redact_text
from inventory.storage.errors import (
    BucketMissing,
    ChecksumMismatch,
    ConfigError,
    NotFound,
    PermissionDenied,
    StorageError,
    StorageFull,
    Unreachable,
    UploadLost,
)

MiB = 1 << 20
MIN_PART = 5 * MiB  # the S3 minimum for every part but the last
MAX_PARTS = 10_000
MAX_PUT = 5 << 30  # the S3 maximum for one PUT


_S3_STRINGS = {"endpoint_url", "region", "access_key", "secret_key", "session_token",
               "addressing_style"}
_S3_COUNTS = {"part_size": 1, "multipart_threshold": 0, "max_concurrency": 1,
              "max_pool_connections": 1, "max_attempts": 1, "list_page_size": 1}
_S3_SECONDS = {"connect_timeout", "read_timeout"}
_S3_FLAGS = {"content_md5", "sign_payload"}
_ADDRESSING = {"auto", "virtual", "path"}


def _check_setting(key: str, value: Any) -> None:
    """A value of the wrong type or range is refused when the storage is registered, not met
    as a TypeError (an internal error) at the first copy or listing."""
    if key in _S3_STRINGS:
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"s3 config {key!r} must be a string")
        if key == "endpoint_url" and value is not None:
            scheme, _, rest = value.partition("://")
            if scheme not in ("http", "https") or not rest.strip("/"):
                raise ConfigError(f"s3 config 'endpoint_url' must be an http:// or https:// URL, "
                                  f"not {value!r}")
        if key == "addressing_style" and value is not None and value not in _ADDRESSING:
            raise ConfigError(f"s3 config 'addressing_style' must be one of "
                              f"{sorted(_ADDRESSING)}, not {value!r}")
    elif key in _S3_COUNTS:
        if not isinstance(value, int) or isinstance(value, bool) or value < _S3_COUNTS[key]:
            raise ConfigError(f"s3 config {key!r} must be an integer >= {_S3_COUNTS[key]}")
        if key == "list_page_size" and value > 1000:
            raise ConfigError("s3 config 'list_page_size' must be at most 1000 (S3's page)")
    elif key in _S3_SECONDS:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ConfigError(f"s3 config {key!r} must be a number of seconds > 0")
    elif key in _S3_FLAGS and not isinstance(value, bool):
        raise ConfigError(f"s3 config {key!r} must be true or false")


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Where the bucket is and how to talk to it; built by ``S3Settings.parse``."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    part_size: int = 16 * MiB          # multipart part size; objects smaller go in one PUT
    multipart_threshold: int = 200 * MiB  # larger objects go multipart, smaller in one PUT
    max_concurrency: int = 4           # parts of one upload in flight at once
    max_pool_connections: int = 32     # HTTP connections shared by all operations
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 3              # botocore's own retries of one request
    addressing_style: str | None = None
    content_md5: bool = True           # the server checks each PUT/part against it
    sign_payload: bool = False         # SHA-256 of every body in SigV4 (see client_config)
    list_page_size: int = 1000         # keys per ListObjectsV2 request

    @classmethod
    def parse(cls, root: str, config: Mapping[str, Any] | None = None) -> S3Settings:
        config = dict(config or {})
        allowed = {f.name for f in fields(cls)} - {"bucket", "prefix"}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ConfigError(f"unknown s3 config keys {unknown}; allowed: {sorted(allowed)}")
        for key, value in config.items():
            _check_setting(key, value)
        location = root.removeprefix("s3://").strip("/")
        bucket, _, prefix = location.partition("/")
        if not bucket or "//" in prefix or any(s in (".", "..") for s in prefix.split("/")):
            raise ConfigError(f"s3 root must be 'bucket' or 'bucket/prefix', not {root!r}")
        env = os.environ
        config.setdefault("endpoint_url",
                          env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"))
        config.setdefault("region", env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
                          or "us-east-1")
        try:
            settings = cls(bucket=bucket, prefix=prefix, **config)
        except TypeError as exc:
            raise ConfigError(f"bad s3 config: {exc}") from None
        if settings.part_size < MIN_PART:
            raise ConfigError(f"s3 part_size must be at least {MIN_PART} bytes (S3 minimum)")
        if not 0 <= settings.multipart_threshold <= MAX_PUT:
            raise ConfigError(f"s3 multipart_threshold must be 0 to {MAX_PUT} bytes (S3's "
                              "largest PUT)")
        if settings.max_concurrency < 1:
            raise ConfigError("s3 max_concurrency must be at least 1")
        return settings

    @property
    def signs_payload(self) -> bool:
        """Whether SigV4 covers a SHA-256 of each body (which needs the whole body first)."""
        return self.sign_payload or not self.content_md5

    @property
    def where(self) -> str:
        """The endpoint and bucket for messages, without credentials written in the URL."""
        return f"{redact_text(self.endpoint_url or 'AWS')} s3://{self.bucket}"

    def same_endpoint(self, other: S3Settings) -> bool:
        """True when a server-side copy from ``other`` can work: same service, same identity."""
        return (self.endpoint_url == other.endpoint_url and self.region == other.region
                and self.access_key == other.access_key)

    def client_config(self) -> AioConfig:
        style = self.addressing_style or ("path" if self.endpoint_url else "auto")
        return AioConfig(
            signature_version="s3v4",
            response_checksum_validation="when_required",
            request_checksum_calculation="when_required",
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            # botocore SHA-256-signs every body over plain http, in the event loop thread
            # (~30 ms per 16 MiB part, and half the upload throughput on 2 cores). Content-MD5,
            # itself covered by the signature, already protects each body, which is what
            # botocore settles for over https.
            s3={"addressing_style": style,
                "payload_signing_enabled": self.signs_payload},
        )


_session: AioSession | None = None


def _shared_session() -> AioSession:
    """One botocore session per process: it caches the parsed S3 service model (~0.2 s)."""
    global _session
    if _session is None:
        _session = get_session()
    return _session


class ClientHolder:
    """Creates the aiobotocore client on first use (``__init__`` may run outside a loop) and
    closes it once."""

    def __init__(self, settings: S3Settings) -> None:
        self._settings = settings
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    s = self._settings
                    self._client = await self._stack.enter_async_context(
                        _shared_session().create_client(
                            "s3", region_name=s.region, endpoint_url=s.endpoint_url,
                            aws_access_key_id=s.access_key,
                            aws_secret_access_key=s.secret_key,
                            aws_session_token=s.session_token,
                            config=s.client_config()))
        return self._client

    async def close(self) -> None:
        self._client = None
        await self._stack.aclose()


_CODE_CLASS: dict[str, type[StorageError]] = {
    "404": NotFound, "NoSuchKey": NotFound, "NotFound": NotFound,
    "NoSuchBucket": BucketMissing, "NoSuchUpload": UploadLost,
    "403": PermissionDenied, "AccessDenied": PermissionDenied,
    "InvalidAccessKeyId": PermissionDenied, "SignatureDoesNotMatch": PermissionDenied,
    "AllAccessDisabled": PermissionDenied, "AccountProblem": PermissionDenied,
    "QuotaExceeded": StorageFull, "XMinioStorageFull": StorageFull,
    "EntityTooLarge": StorageFull, "InsufficientStorage": StorageFull,
    "500": Unreachable, "502": Unreachable, "503": Unreachable, "504": Unreachable,
    "InternalError": Unreachable, "ServiceUnavailable": Unreachable, "SlowDown": Unreachable,
    "RequestTimeout": Unreachable,
}

_NETWORK_ERRORS = (bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError,
                   aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


@contextlib.contextmanager
def translate(path: str | None, where: str) -> Iterator[None]:
    """Turn botocore/aiohttp failures inside the block into storage errors."""
    try:
        yield
    except bce.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or exc.response.get("ResponseMetadata", {})
                   .get("HTTPStatusCode", ""))
        what = f" {path!r}" if path else ""
        message = redact_text(f"{code}: {error.get('Message') or exc} for{what} ({where})")
        if code in ("BadDigest", "InvalidDigest"):
            raise ChecksumMismatch(message, side="target", expected="sent bytes",
                                   actual="stored bytes", path=path) from exc
        raise _CODE_CLASS.get(code, StorageError)(message, path=path) from exc
    except (bce.NoCredentialsError, bce.PartialCredentialsError) as exc:
        raise PermissionDenied(redact_text(f"no usable S3 credentials: {exc} ({where})"),
                               path=path) from exc
    except _NETWORK_ERRORS as exc:
        # botocore names the endpoint URL, credentials written into it included
        raise Unreachable(redact_text(f"S3 endpoint not answering: "
                                      f"{exc or type(exc).__name__} ({where})"),
                          path=path) from exc
