"""Item names map safely under a root; checksum helpers; the backend factory's checks.

None of these need a server: they pin the rules that keep a hostile or careless item name from
touching anything outside a storage, and the adler32 values every copy is verified against.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from inventory.storage import (
    Adler32,
    ConfigError,
    InvalidPath,
    NotFound,
    PosixBackend,
    S3Backend,
    adler32_of,
    backend_for,
    check_name,
)
from inventory.storage.checksum import IMPLEMENTATION, normalize
from inventory.storage.paths import check_prefix, join_key

ESCAPES = ["", "/etc/passwd", "../x", "a/../../x", "a/..", "..", ".", "a/./b", "a//b", "a/",
           "a\\..\\b", "a\x00b", "a\nb", ".dlm-0123.part", "d/.dlm-x", "x" * 256,
           "a/" * 600]


@pytest.mark.parametrize("name", ["a", "run 1/file name.dat", "ünïcødé/データ ファイル.h5",
                                  "a/b/c/d.e", "..a/b..", "a b/.hidden", "x" * 255])
def test_good_names_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ESCAPES)
def test_escaping_or_malformed_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidPath):
        check_name(name)


@pytest.mark.parametrize("name", ESCAPES)
async def test_backends_reject_escapes_before_touching_anything(tmp_path: Path,
                                                                name: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    posix = PosixBackend(root)
    s3 = S3Backend.from_storage("bucket/prefix", {"endpoint_url": "http://127.0.0.1:9",
                                                  "access_key": "k", "secret_key": "s"})

    async def one_chunk():
        yield b"payload"

    try:
        for backend in (posix, s3):
            with pytest.raises(InvalidPath):
                await backend.write(name, one_chunk())
            with pytest.raises(InvalidPath):
                await backend.stat(name)
            with pytest.raises(InvalidPath):
                await backend.delete(name)
    finally:
        await posix.close()
        await s3.close()
    assert sorted(os.listdir(tmp_path)) == ["root"]
    assert os.listdir(root) == []


async def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)

    async def one_chunk():
        yield b"x"

    async with PosixBackend(root) as backend:
        with pytest.raises(InvalidPath):
            await backend.stat("link/secret")
        with pytest.raises(InvalidPath):
            async with backend.open_read("link/secret"):
                pass
        with pytest.raises(InvalidPath):
            await backend.write("link/new", one_chunk())
        with pytest.raises(InvalidPath):
            await backend.delete("link/secret")
        assert [e.path async for e in backend.list()] == []
    assert sorted(os.listdir(outside)) == ["secret"]


def test_prefixes_and_keys() -> None:
    assert check_prefix("") == ""
    assert check_prefix("run1/fi") == "run1/fi"
    for bad in ("/x", "../", "a/../b", "a/.."):
        with pytest.raises(InvalidPath):
            check_prefix(bad)
    assert join_key("", "a b") == "a b"
    assert join_key("p/q", "a b") == "p/q/a b"


def test_adler32_streaming_matches_zlib() -> None:
    data = os.urandom(3 << 20) + b"tail"
    summer = Adler32()
    for start in range(0, len(data), 65537):
        summer.update(memoryview(data)[start:start + 65537])
    expected = f"{zlib.adler32(data):08x}"
    assert summer.hexdigest() == adler32_of(data) == expected
    assert adler32_of(b"") == "00000001"  # the empty file's adler32, zero-padded
    assert IMPLEMENTATION in ("isal", "zlib")


def test_checksum_normalize() -> None:
    assert normalize(" 1A2B ") == "00001a2b"
    for bad in ("", "xyz", "123456789", "12 34"):
        with pytest.raises(ValueError):
            normalize(bad)


async def test_factory_builds_and_checks(tmp_path: Path) -> None:
    posix = backend_for("posix", str(tmp_path), {"fsync": False})
    assert isinstance(posix, PosixBackend) and not posix.fsync
    s3 = backend_for("s3", "s3://bucket/a/b", {"endpoint_url": "http://h:1", "part_size": 6 << 20})
    assert isinstance(s3, S3Backend)
    assert (s3.settings.bucket, s3.settings.prefix, s3.settings.part_size) == ("bucket", "a/b",
                                                                               6 << 20)
    await posix.close()
    await s3.close()
    bad = [("tape", "/x", {}), ("posix", "relative/dir", {}), ("posix", "/x", {"fsync": "yes"}),
           ("posix", "/x", {"threads": True}), ("posix", "/x", {"copy_method": "magic"}),
           ("posix", "/x", {"colour": 1}), ("s3", "", {}), ("s3", "b/../c", {}),
           ("s3", "b", {"part_size": 1024}), ("s3", "b", {"endpoint": "typo"}),
           ("s3", "b", {"max_concurrency": 0})]
    for kind, root, config in bad:
        with pytest.raises(ConfigError):
            backend_for(kind, root, config)


async def test_posix_root_missing_is_unreachable_not_not_found(tmp_path: Path) -> None:
    from inventory.storage import Unreachable

    async with PosixBackend(tmp_path / "unmounted") as backend:
        with pytest.raises(Unreachable):
            await backend.stat("a")
        with pytest.raises(Unreachable):
            [e async for e in backend.list()]
    async with PosixBackend(tmp_path) as backend:
        with pytest.raises(NotFound):
            await backend.stat("a")


def test_the_fast_name_check_accepts_exactly_what_the_full_check_accepts() -> None:
    """``check_name`` answers most names with a few regex scans (bulk ingest checks every
    name twice): that shortcut must never accept a name the rule-by-rule check refuses, and
    must take every good ASCII name (else the bulk path is silently slow). Every name of up to
    5 characters over an alphabet of separators, dots, the reserved prefix's letters and bad
    characters, and names at the length limits."""
    from itertools import product

    from inventory.storage import paths

    def accepted(name: str) -> bool:
        try:
            paths._check_name_fully(name)
        except InvalidPath:
            return False
        return True

    names = ["".join(chars) for n in range(6) for chars in product("a./-\\\x01é", repeat=n)]
    names += [".dlm-", "a/.dlm-x", "a/.dlmx", "a.dlm-/b", "x" * 255, "x" * 256, "é" * 128,
              "é" * 127, "a/" + "x" * 256, ("x" * 200 + "/") * 5 + "x",
              ("x" * 200 + "/") * 6, "\u202a", "a\x9f", "\ud800", "a/b\x7f"]
    for name in names:
        fast = paths.fast_name(name)
        assert not fast or accepted(name), name
        assert fast or not name.isascii() or not accepted(name), name
        assert (paths.check_name(name) == name if accepted(name) else True)
