"""``dlm token create|ls|rm`` and how the CLI finds its token: flag, DLM_TOKEN, config file."""

from __future__ import annotations

import re

pytest_plugins = ["tests.cli_fixtures"]


def create(dlm, role, name, *extra):
    result = dlm("token", "create", "--role", role, "--name", name, *extra)
    secret = result.out.strip()
    assert "\n" not in secret and len(secret) >= 20
    assert f"token '{name}' ({role}) created; it is shown only now" in result.err
    return secret


def test_first_token_ends_open_mode_and_then_a_token_is_needed(dlm, monkeypatch):
    admin = create(dlm, "operator", "admin")
    message = dlm.error("token", "ls")
    assert message.endswith("(give a token with --token, DLM_TOKEN or the config file)")
    lines = dlm("token", "ls", "--token", admin).out.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "CREATED", "EXPIRES"]
    assert lines[1].split()[:2] == ["admin", "operator"]
    monkeypatch.setenv("DLM_TOKEN", admin)
    tokens = dlm.json("token", "ls")
    assert [(t["name"], t["role"]) for t in tokens] == [("admin", "operator")]
    assert all("token" not in t and "sha256" not in t for t in tokens)


def test_roles_are_enforced_with_a_clear_message(dlm, monkeypatch):
    admin = create(dlm, "operator", "admin")
    monkeypatch.setenv("DLM_TOKEN", admin)
    reader = create(dlm, "reader", "dashboard")
    producer = create(dlm, "producer", "pipeline", "--expires-at", "2099-01-01T00:00:00Z")
    assert dlm.json("token", "ls")[2]["expires_at"].startswith("2099-01-01")
    dlm("storage", "add", "disk1", "--kind", "posix", "--root", "/d", "--capacity", "1 TB")
    message = dlm.error("storage", "add", "disk2", "--kind", "posix", "--root", "/d",
                        "--capacity", "1 TB", "--token", reader)
    assert message.endswith("(this token's role may not do this)")
    dlm("storage", "ls", "--token", reader)
    dlm("inject", "p/a", "--token", producer)
    assert dlm.error("rm", "p/a", "--token", producer).endswith(
        "(this token's role may not do this)")
    assert dlm.error("ls", "--token", "wrong-secret").endswith("DLM_TOKEN or the config file)")


def test_token_rm_revokes(dlm, monkeypatch):
    admin = create(dlm, "operator", "admin")
    monkeypatch.setenv("DLM_TOKEN", admin)
    old = create(dlm, "reader", "old")
    assert dlm("token", "rm", "old").out.strip() == "token 'old' removed"
    assert [t["name"] for t in dlm.json("token", "ls")] == ["admin"]
    assert "DLM_TOKEN" in dlm.error("ls", "--token", old)
    assert dlm.error("token", "rm", "old").startswith("name: ")


def test_token_create_json_has_the_secret_once(dlm, monkeypatch):
    # an operator's first: a producer's alone would end open mode with no operator left
    monkeypatch.setenv("DLM_TOKEN", create(dlm, "operator", "admin"))
    made = dlm.json("token", "create", "--role", "producer")
    assert made["role"] == "producer" and made["name"] and made["token"]
    assert re.fullmatch(r"\S+", made["token"])
    assert dlm.error("token", "create", "--role", "producer", "--name", made["name"],
                     "--token", made["token"]).endswith("(this token's role may not do this)")


def test_token_create_duplicate_name(dlm, monkeypatch):
    admin = create(dlm, "operator", "admin")
    monkeypatch.setenv("DLM_TOKEN", admin)
    assert "admin" in dlm.error("token", "create", "--role", "reader", "--name", "admin")


def test_config_file_gives_url_and_token(dlm, cli_server, client_env, monkeypatch, tmp_path):
    admin = create(dlm, "operator", "admin")
    monkeypatch.delenv("DLM_URL")
    config = client_env / ".config" / "dlm" / "client.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"url: {cli_server.url}\ntoken: {admin}\n")
    assert [t["name"] for t in dlm.json("token", "ls")] == ["admin"]
    # DLM_CONFIG names another file; the flags override it.
    other = tmp_path / "other.yaml"
    other.write_text(f"url: {cli_server.url}\ntoken: nope\n")
    monkeypatch.setenv("DLM_CONFIG", str(other))
    assert "DLM_TOKEN" in dlm.error("token", "ls")
    assert dlm.json("token", "ls", "--token", admin)[0]["name"] == "admin"
    monkeypatch.setenv("DLM_TOKEN", admin)  # the environment overrides the file too
    assert dlm.json("token", "ls")[0]["name"] == "admin"
