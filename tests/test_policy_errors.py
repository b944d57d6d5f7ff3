"""Golden error messages: every error the loader can report, with its line and column.

A change to any message is a deliberate change to what operators read; update the text here.
"""
# ruff: noqa: E501 - golden messages are compared whole

from __future__ import annotations

import pytest

from policies import PolicyError, load_policy, load_policy_text

P = 'partition "P" {}\n'

CASES = [
    pytest.param(
        P + 'detox {\n  protect if item.popularty > 3\n  default dismiss\n}\n',
        ["t.policy:3:19: unknown item attribute 'popularty'; expected one of 'name', 'version', 'type', 'state', 'phase', 'target_phase', 'size', 'created', 'age', 'expire_at', 'metadata', 'copies', 'popularity', 'access_count', 'last_access', 'parent', 'owner', 'group'; did you mean 'popularity'?"],
        id='unknown attr'),
    pytest.param(
        P + 'detox {\n  protect if itme.size > 1 TB\n  default dismiss\n}\n',
        ["t.policy:3:14: unknown object 'itme' in 'itme.size'; expected item, replica or storage; did you mean 'item'?"],
        id='unknown object'),
    pytest.param(
        P + 'detox {\n  protect if item.size > "x"\n  default dismiss\n}\n',
        ['t.policy:3:26: text "x" does not fit item.size; expected a size such as 500 GB or 2 GiB for item.size'],
        id='type mismatch string'),
    pytest.param(
        P + 'detox {\n  protect if item.size > 500\n  default dismiss\n}\n',
        ['t.policy:3:26: 500 has no unit; expected a size such as 500 GB or 2 GiB for item.size'],
        id='no unit'),
    pytest.param(
        P + 'detox {\n  protect if item.size > 7d\n  default dismiss\n}\n',
        ['t.policy:3:26: 7d is a duration; expected a size such as 500 GB or 2 GiB for item.size'],
        id='duration for size'),
    pytest.param(
        P + 'detox {\n  protect if item.state == REDY\n  default dismiss\n}\n',
        ["t.policy:3:28: unknown item state 'REDY'; expected one of 'INITIALISED', 'READY', 'EXPIRED', 'DELETED', 'CORRUPTED'; did you mean 'READY'?"],
        id='unknown state'),
    pytest.param(
        P + 'dealer {\n  phase SOLIDD copies 2\n}\n',
        ["t.policy:3:9: unknown phase 'SOLIDD'; expected one of 'PLASMA', 'GAS', 'LIQUID', 'SOLID'; did you mean 'SOLID'?"],
        id='unknown phase'),
    pytest.param(
        P + 'detox {\n  protect if replica.state == READY\n  default dismiss\n}\n',
        ["t.policy:3:31: unknown replica state 'READY'; expected one of 'pending', 'copying', 'complete', 'deleting', 'deleted', 'missing', 'corrupt'"],
        id='replica state wrong enum'),
    pytest.param(
        P + 'detox {\n  when replica.size > 1 GB\n  default dismiss\n}\n',
        ["t.policy:3:8: replica.* cannot be used in a 'when' condition; expected only storage.* there"],
        id='scope'),
    pytest.param(
        P + 'detox {\n  protect if item.size > 1 TB\n}\n',
        ["t.policy:2:1: the detox block has no default decision; expected a last rule such as 'default dismiss' or 'default protect'"],
        id='missing default'),
    pytest.param(
        P + 'detox {\n  default dismiss\n  protect if item.size > 1 TB\n}\n',
        ['t.policy:4:3: this rule comes after the default (line 3) and is never reached; expected the default as the last rule'],
        id='after default'),
    pytest.param(
        P + 'detox {\n  protect if item.name == raw\n  default dismiss\n}\n',
        ['t.policy:3:27: \'raw\' is a bare word; text must be quoted; expected a quoted string such as "raw" for item.name; did you mean \'"raw"\'?'],
        id='bare word text'),
    pytest.param(
        P + 'detox {\n  protect if item.name < "b"\n  default dismiss\n}\n',
        ["t.policy:3:24: '<' does not apply to item.name, which is text; expected '==', '!=', 'in' or 'matches'"],
        id='ordering text'),
    pytest.param(
        P + 'detox {\n  when storage.occupancy > 90\n  default dismiss\n}\n',
        ["t.policy:3:28: 90 is not a fraction; expected a percentage such as 90% (or a fraction between 0 and 1) for storage.occupancy; did you mean '90%'?"],
        id='fraction'),
    pytest.param(
        P + 'detox {\n  protect if item.created > 2024-02-30\n  default dismiss\n}\n',
        ["t.policy:3:29: '2024-02-30' is not a valid date; expected an ISO date such as 2024-06-30 or 2024-06-30T12:00:00Z"],
        id='bad date'),
    pytest.param(
        P + 'detox {\n  protect if item.name matches /a(b/\n  default dismiss\n}\n',
        ['t.policy:3:32: invalid pattern /a(b/: missing ), unterminated subpattern at position 1; expected a valid glob or regular expression'],
        id='bad regex'),
    pytest.param(
        P + 'detox {\n  protect if item.metadata == "x"\n  default dismiss\n}\n',
        ['t.policy:3:14: item.metadata is a map and cannot be used whole; expected a key, such as item.metadata.KEY or item.metadata["KEY"]'],
        id='map whole'),
    pytest.param(
        P + 'detox {\n  protect if item.size.x == 1\n  default dismiss\n}\n',
        ["t.policy:3:24: item.size has no field 'x'; expected item.size alone (a size)"],
        id='field on scalar'),
    pytest.param(
        P + 'detox {\n  protect if item.size\n  default dismiss\n}\n',
        ['t.policy:3:14: item.size is a size, not a condition; expected a comparison such as item.size > 1 TB'],
        id='not a condition'),
    pytest.param(
        P + 'detox {\n  protect if 1 == 2\n  default dismiss\n}\n',
        ['t.policy:3:14: this compares two constants; expected an attribute on one side, such as item.size > 1 TB'],
        id='two constants'),
    pytest.param(
        P + 'detox {\n  protect if item.size == none\n  default dismiss\n}\n',
        ['t.policy:3:27: item.size is never none; expected a size such as 500 GB or 2 GiB'],
        id='none not nullable'),
    pytest.param(
        P + 'detox {\n  protect if item.created older_than 30\n  default dismiss\n}\n',
        ["t.policy:3:38: 'older_than' needs a duration or a date; expected a duration such as 30d or a date such as 2024-06-30"],
        id='older_than number'),
    pytest.param(
        P + 'detox {\n  protect if item.size older_than 30d\n  default dismiss\n}\n',
        ["t.policy:3:14: 'older_than' does not apply to item.size, which is a size; expected a time such as item.created or item.last_access"],
        id='older_than on size'),
    pytest.param(
        P + 'detox {\n  default dismiss\n  order by item.name\n}\n',
        ['t.policy:4:12: cannot order by item.name, which is text; expected a number, size, fraction, duration, time or phase attribute'],
        id='order by text'),
    pytest.param(
        P + 'detox {\n  when storage.occupancy > 90%\n  when storage.occupancy > 80%\n  default dismiss\n}\n',
        ["t.policy:4:3: a second 'when' clause in detox (the first is at line 3)"],
        id='duplicate when'),
    pytest.param(
        P + 'detox {\n  protect "a" if item.size > 1 TB\n  protect "a" if item.size > 2 TB\n  default dismiss\n}\n',
        ['t.policy:4:11: the label "a" is already used at line 3; expected a label unique within the file'],
        id='duplicate label'),
    pytest.param(
        'detox {\n  default dismiss\n}\n',
        ['t.policy:1:1: no partition block; expected a file that starts with partition "NAME" { ... }'],
        id='no partition'),
    pytest.param(
        'partition "P" {}\npartition "P" {}\n',
        ['t.policy:2:1: a second partition block; a policy file has one (the first is at line 1)'],
        id='two partitions'),
    pytest.param(
        P + 'dealer {\n  phase SOLID copies 2 TB\n}\n',
        ['t.policy:3:22: copies must be a whole number; expected a count such as 2, without a unit'],
        id='copies unit'),
    pytest.param(
        P + 'dealer {\n  phase SOLID copies 1.5\n}\n',
        ['t.policy:3:22: copies must be a whole number; expected a count such as 2, without a unit'],
        id='copies fraction'),
    pytest.param(
        P + 'dealer {\n  balance { max_copies 3 }\n}\n',
        ["t.policy:3:13: 'max_copies' is not a balance setting; expected one of 'spread', 'volume_per_cycle'"],
        id='setting in wrong block'),
    pytest.param(
        P + 'dealer {\n  popularity { threshold 10 }\n}\n',
        ['t.policy:3:3: the popularity block lacks half_life, max_copies; expected half_life, threshold and max_copies'],
        id='popularity missing'),
    pytest.param(
        P + 'dealer {\n  limits { target_occupancy 5 TB }\n}\n',
        ['t.policy:3:29: target_occupancy 5 TB: wrong kind of value; expected a percentage such as 85%'],
        id='setting wrong kind'),
    pytest.param(
        'partition "P" {\n  quota default 7d\n}\n',
        ["t.policy:2:17: quota '7d' is not a size; expected a size such as 500 TB, or a percentage of the capacity"],
        id='quota not size'),
    pytest.param(
        'partition "P" {\n  quota default 150%\n}\n',
        ['t.policy:2:17: quota 150% is outside 0-100%; expected a percentage of the capacity up to 100%'],
        id='quota over 100'),
    pytest.param(
        P + 'detox {\n  protect if item.state in {}\n  default dismiss\n}\n',
        ['t.policy:3:28: an empty set; expected at least one value, an item state (INITIALISED, READY, EXPIRED, DELETED, CORRUPTED)'],
        id='empty set'),
    pytest.param(
        P + 'detox {\n  protect if replica.is_last_copy in {true}\n  default dismiss\n}\n',
        ["t.policy:3:14: 'in' does not apply to replica.is_last_copy, a boolean; expected '==' or '!='"],
        id='in on bool'),
    pytest.param(
        P + 'detox {\n  protect if item.size > item.age\n  default dismiss\n}\n',
        ['t.policy:3:14: cannot compare item.size (a size) with item.age (a duration); expected two attributes of the same type'],
        id='attr vs attr'),
    pytest.param(
        P + 'detox {\n  protect if item.size < now\n  default dismiss\n}\n',
        ["t.policy:3:26: 'now' is a time and item.size is not; expected a size such as 500 GB or 2 GiB for item.size"],
        id='now on size'),
    pytest.param(
        P + 'detox {\n  protect if item.size matches "1*"\n  default dismiss\n}\n',
        ["t.policy:3:14: 'matches' does not apply to item.size, which is a size; expected a text attribute such as item.name"],
        id='matches on number'),
    pytest.param(
        P + 'detox {\n  protcet if item.size > 1 TB\n  default dismiss\n}\n',
        ["t.policy:3:3: syntax error: unexpected 'protcet'; expected one of 'default', 'delete', 'dismiss', 'ignore', 'on', 'order', 'protect', 'until', 'when', '}'; did you mean 'protect'?"],
        id='syntax keyword'),
    pytest.param(
        P + 'detox {\n  protect if item.size > 1 TBs\n  default dismiss\n}\n',
        ["t.policy:3:28: syntax error: unexpected 'TBs'; expected one of 'and', 'default', 'delete', 'dismiss', 'ignore', 'on', 'or', 'order', 'protect', 'until', 'when', '}', a unit; did you mean 'TB'?"],
        id='syntax unit'),
    pytest.param(
        P + 'detox {\n  protect if item.age > 7 days\n  default dismiss\n}\n',
        ["t.policy:3:27: syntax error: unexpected 'days'; expected one of 'and', 'default', 'delete', 'dismiss', 'ignore', 'on', 'or', 'order', 'protect', 'until', 'when', '}', a unit; did you mean 'd'?"],
        id='syntax days'),
    pytest.param(
        P + 'detox {\n  protect if item.size = 1 TB\n  default dismiss\n}\n',
        ["t.policy:3:24: syntax error: unexpected '='; expected one of '!=', '.', '<', '<=', '==', '>', '>=', '[', 'and', 'default', 'delete', 'dismiss', 'ignore', 'in', 'matches', 'newer_than', ... (9 more); did you mean '=='?"],
        id='syntax ='),
    pytest.param(
        P + 'detox {\n  protect if item.size > 1 TB\n',
        ["t.policy:4:1: syntax error: unexpected end of file; expected one of 'and', 'default', 'delete', 'dismiss', 'ignore', 'on', 'or', 'order', 'protect', 'until', 'when', '}'"],
        id='syntax eof'),
    pytest.param(
        P + 'detox {\n  protect if item.name == "abc\n}\n',
        ['t.policy:3:27: syntax error: unterminated string; expected a closing " on the same line'],
        id='syntax string'),
    pytest.param(
        P + 'detox {\n  protect if item.size > 1 TB && item.copies > 1\n  default dismiss\n}\n',
        ["t.policy:3:31: syntax error: unexpected '&&'; expected one of 'and', 'default', 'delete', 'dismiss', 'ignore', 'on', 'or', 'order', 'protect', 'until', 'when', '}'; did you mean 'and'?"],
        id='syntax &&'),
    pytest.param(
        'partition "P" {\n  members\n}\n',
        ["t.policy:3:1: syntax error: unexpected '}'; expected one of '(', 'false', 'none', 'not', 'now', 'true', a date, a name, a number, a quoted string"],
        id='missing members cond'),
    pytest.param(
        P + 'detox {\n  protect if item.copies > 1e999\n  default dismiss\n}\n',
        ["t.policy:3:28: the number '1e999' is too large; expected a finite number"],
        id='huge number'),
    pytest.param(
        P + 'detox {\n  protect if item.sise > 1 TB\n  dismiss if item.state == REDY\n  default dismiss\n}\n',
        ["t.policy:3:19: unknown item attribute 'sise'; expected one of 'name', 'version', 'type', 'state', 'phase', 'target_phase', 'size', 'created', 'age', 'expire_at', 'metadata', 'copies', 'popularity', 'access_count', 'last_access', 'parent', 'owner', 'group'; did you mean 'size'?", "t.policy:4:28: unknown item state 'REDY'; expected one of 'INITIALISED', 'READY', 'EXPIRED', 'DELETED', 'CORRUPTED'; did you mean 'READY'?"],
        id='multi errors'),
    pytest.param(
        P + 'detox {\n  protect if replica.is_last_copy > true\n  default dismiss\n}\n',
        ["t.policy:3:35: '>' does not apply to replica.is_last_copy, which is a boolean; expected '==' or '!='"],
        id='ordering bool'),
    pytest.param(
        P + 'detox {\n  protect if item.expire_at < none\n  default dismiss\n}\n',
        ["t.policy:3:31: none cannot be ordered with '<'; expected '==' or '!=' to test for none"],
        id='none ordering'),
    pytest.param(
        P + 'dealer {\n  phase SOLID copies 2\n  phase SOLID copies 3\n}\n',
        ['t.policy:4:3: phase SOLID already has copies at line 3'],
        id='dup phase'),
    pytest.param(
        P + 'dealer {\n  limits { to storage.status == online }\n}\n',
        ["t.policy:3:12: 'to' is not a limits setting; expected one of 'target_occupancy', 'max_pending', 'volume_per_cycle', 'storage_volume_per_cycle'"],
        id='to in limits'),
    pytest.param(
        P + 'dealer {\n  limits { max_pendin 5% }\n}\n',
        ["t.policy:3:12: syntax error: unexpected 'max_pendin'; expected one of 'half_life', 'max_copies', 'max_pending', 'spread', 'storage_volume_per_cycle', 'target_occupancy', 'threshold', 'to', 'volume_per_cycle', '}'; did you mean 'max_pending'?"],
        id='unknown setting typo'),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_error_message(text: str, expected: list[str]) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "t.policy")
    assert [str(d) for d in info.value.diagnostics] == expected
    assert str(info.value) == "\n".join(expected)


def test_diagnostic_fields() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_text(P + "detox {\n  protect if item.popularty > 3\n  default dismiss\n}\n",
                         "t.policy")
    d = info.value.first
    assert (d.file, d.line, d.column) == ("t.policy", 3, 19)
    assert d.text == "item.popularty"
    assert d.suggestion == "popularity"
    assert "popularity" in d.expected


def test_unreadable_file_is_a_policy_error(tmp_path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "missing.policy")
    assert str(info.value).startswith(f"{tmp_path / 'missing.policy'}:1:1: cannot read the file")
    bad = tmp_path / "latin1.policy"
    bad.write_bytes(b'partition "\xe9" {}')
    with pytest.raises(PolicyError):
        load_policy(bad)

