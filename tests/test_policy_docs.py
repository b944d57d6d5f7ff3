"""docs/policy-language.md documents every attribute, keyword, unit and setting of the language:
a test that fails when the reference misses one (datasette's tests/test_docs.py habit)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policies.checker import SETTINGS
from policies.schema import ATTRIBUTES
from policies.units import ALL_UNITS

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "policy-language.md").read_text()
GRAMMAR = (ROOT / "policies" / "grammar.lark").read_text()


@pytest.mark.parametrize("path", [f"{o}.{n}" for o, table in ATTRIBUTES.items() for n in table])
def test_every_attribute_is_documented(path: str) -> None:
    assert f"`{path}`" in DOC


def test_every_keyword_and_unit_is_documented() -> None:
    grammar = re.sub(r"//[^\n]*", "", GRAMMAR)
    keywords = set(re.findall(r'"([a-z_]+)"', grammar))
    assert len(keywords) > 40
    missing = [k for k in sorted(keywords) if not re.search(rf"\b{k}\b", DOC)]
    assert missing == []
    assert [u for u in ALL_UNITS if f"`{u}`" not in DOC] == []
    settings = {name for block in SETTINGS.values() for name in block}
    assert [s for s in sorted(settings) if s not in DOC] == []
