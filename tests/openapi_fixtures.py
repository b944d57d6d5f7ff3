"""Helpers for checking the server against its own OpenAPI document with schemathesis.

The fuzzer runs as ``python -m schemathesis.cli run`` in a subprocess against ``dlm serve`` in
another (the conftest ``server_process``): the same program a CI job or a person would run, with
its JSON report read back for the figures. This module is also the fuzzer's hooks module
(``SCHEMATHESIS_HOOKS=tests.openapi_fixtures``) so msgpack answers can be checked too.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import schemathesis

REPO = Path(__file__).resolve().parent.parent
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance"


@schemathesis.deserializer("application/msgpack")
def _msgpack(ctx: Any, response: Any) -> Any:
    """Lets the fuzzer validate msgpack answers (the snapshot stream is several objects)."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(response.content)
    objects = list(unpacker)
    return objects[0] if len(objects) == 1 else objects


# ----------------------------------------------------------------------- talking to a server

def call(url: str, method: str, path: str, body: Any = None, token: str | None = None
         ) -> tuple[int, Any]:
    """One JSON request with the standard library (status, decoded body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    return status, json.loads(raw) if raw else None


def must(url: str, method: str, path: str, body: Any = None, token: str | None = None,
         status: int = 200) -> Any:
    got, answer = call(url, method, path, body, token)
    assert got == status, f"{method} {path} -> {got}: {answer}"
    return answer


@dataclass
class Seeded:
    """Real things the fuzzer can hit by name or oid (as OpenAPI examples)."""

    storages: list[str]
    oids: list[str]  # a READY file, a container, its INITIALISED member
    request_ids: list[int]
    operation_ids: list[int] = field(default_factory=list)


def seed(url: str, root: Path, token: str | None = None) -> Seeded:
    """Two posix storages and an offline S3 one, a few items, a copy request, an operation."""
    for name, kind, where, extra in (
            ("disk1", "posix", str(root / "disk1"), {"capacity": "1 TB"}),
            ("disk2", "posix", str(root / "disk2"), {"capacity": 10**12, "phase": "LIQUID"}),
            ("bucket", "s3", "bucket/dlm", {"capacity": "1 PB", "status": "offline",
                                            "attributes": {"region": "eu"}})):
        (root / name).mkdir(parents=True, exist_ok=True)
        must(url, "POST", "/v1/storages", {"name": name, "kind": kind, "root": where, **extra},
             token, 201)
    (root / "disk1" / "obs").mkdir(exist_ok=True)
    (root / "disk1" / "obs" / "scan-1.ms").write_bytes(b"x" * 1024)
    scan = must(url, "POST", "/v1/items", {
        "item_name": "obs/scan-1.ms", "size": 1024, "storage": "disk1",
        "metadata": {"project": "ska", "band": 2}, "lifetime": 86400}, token, 201)
    run = must(url, "POST", "/v1/items", {"item_name": "obs/run-1", "item_type": "container"},
               token, 201)
    member = must(url, "POST", "/v1/items", {"item_name": "obs/run-1/a.dat", "size": 10,
                                             "parent_oid": run["oid"]}, token, 201)
    request = must(url, "POST", "/v1/requests", {"item": scan["oid"], "storage": "disk2",
                                                 "comment": "seed"}, token, 201)
    seeded = Seeded(["disk1", "disk2", "bucket"], [scan["oid"], run["oid"], member["oid"]],
                    [request["id"]])
    status, op = call(url, "POST", "/v1/operations",
                      {"kind": "copy", "item": scan["oid"], "target": "disk2"}, token)
    if status == 201:  # the copy request may have queued it already
        seeded.operation_ids.append(op["id"])
    for page in must(url, "GET", "/v1/operations", token=token)["operations"]:
        seeded.operation_ids.append(page["id"])
    return seeded


# ----------------------------------------------------------------------- the fuzzed document

_EXAMPLES = {"oid": "oids", "name": "storages"}


def fuzz_document(url: str, seeded: Seeded, *, drop: tuple[tuple[str, str], ...] = ()
                  ) -> dict[str, Any]:
    """The served document with seeded examples, minus what a bounded run cannot afford.

    ``wait`` of ``/v1/changes`` is a long poll of up to 300 s: generated values would spend the
    whole budget sleeping, so it is left out (test_feed covers it). ``drop`` removes operations
    (POST /v1/tokens in open mode: its first success would end open mode for the rest).
    """
    doc = copy.deepcopy(must(url, "GET", "/openapi.json"))
    for method, path in drop:
        del doc["paths"][path][method.lower()]
    ids = {"/v1/requests/{id}": seeded.request_ids,
           "/v1/operations/{id}": seeded.operation_ids}
    for path, methods in doc["paths"].items():
        for operation in methods.values():
            params = operation.get("parameters", [])
            if path == "/v1/changes":
                params[:] = [p for p in params if p["name"] != "wait"]
            for param in params:
                if param["in"] != "path":
                    continue
                values = ids.get(path, []) if param["name"] == "id" else \
                    getattr(seeded, _EXAMPLES.get(param["name"], ""), [])
                if path.startswith("/v1/tokens/"):
                    values = ["spare"]  # a config token of the token runs
                if values:
                    param["examples"] = {f"seeded{i}": {"value": v}
                                         for i, v in enumerate(values)}
    for (method, path), bodies in _body_examples(seeded).items():
        content = doc["paths"].get(path, {}).get(method, {}).get("requestBody", {}).get(
            "content", {})
        if "application/json" in content:
            content["application/json"]["examples"] = {
                f"seeded{i}": {"value": body} for i, body in enumerate(bodies)}
    return doc


def _body_examples(seeded: Seeded) -> dict[tuple[str, str], list[Any]]:
    """Bodies that reach past the 404s: they name the seeded items and storages."""
    scan, run, member = seeded.oids
    return {
        ("post", "/v1/items"): [
            {"item_name": "obs/scan-2.ms", "size": 5, "storage": "disk1", "checksum": "0a1b"},
            [{"item_name": "obs/run-1/b.dat", "parent_oid": run, "size": 1},
             {"item_name": "obs/run-1/c.dat", "parent_oid": run, "lifetime": 60}]],
        ("patch", "/v1/items"): [[{"oid": member, "metadata": {"k": "v"}, "size": 10}]],
        ("patch", "/v1/items/{oid}"): [{"storage": "disk2", "size": 10},
                                       {"state": "EXPIRED"}, {"expire_at": None}],
        ("post", "/v1/accesses"): [[{"oid": scan, "count": 3}]],
        ("post", "/v1/items/{oid}/accesses"): [{"count": 2, "at": "2026-01-01T00:00:00Z"}],
        ("post", "/v1/requests"): [{"item": scan, "storage": "disk2"},
                                   {"item": "obs/run-1", "storage": "disk1",
                                    "pin_until": "2030-01-01T00:00:00Z"}],
        ("post", "/v1/operations"): [{"kind": "copy", "item": scan, "target": "disk2"},
                                     {"kind": "delete", "item": scan, "target": "disk1"}],
        ("patch", "/v1/storages/{name}"): [{"attributes": {"tier": "fast", "region": None}},
                                           {"capacity": "2 TB", "phase": "SOLID"}],
        ("post", "/v1/tokens"): [{"name": "made-by-fuzz", "role": "reader"}],
        ("post", "/v1/cycles/detox"): [_plan(expirations=[scan], deletions=[[scan, 1, "r", 1]])],
        ("post", "/v1/cycles/dealer"): [_plan(copies=[[scan, 2, 1, "request 1", 3]],
                                              requests_done=seeded.request_ids)],
    }


def _plan(**fields: Any) -> dict[str, Any]:
    """A cycle plan as Detox and Dealer send it (the policy hash must match its text)."""
    text = "policy fuzz\n"
    return {"policy_name": "fuzz", "policy_file": "fuzz.policy", "policy_text": text,
            "policy_sha256": hashlib.sha256(text.encode()).hexdigest(), "snapshot_version": 1,
            "started": time.time(), "summary": {"planned": 1},
            "decisions": base64.b64encode(zlib.compress(msgpack.packb(
                {"columns": ["oid", "storage_id", "outcome"],
                 "rows": [[fields.get("expirations", ["x"])[0], 1, "delete"]]}))).decode(),
            **fields}


# ----------------------------------------------------------------------- running schemathesis

@dataclass
class FuzzRun:
    """What one schemathesis run did, from its JSON report."""

    exit_code: int
    seconds: float
    generated: int
    with_failures: int
    errored: int
    report: dict[str, Any]
    output: str

    def summary(self) -> str:
        return (f"{self.generated} test cases in {self.seconds:.1f}s, "
                f"{self.with_failures} with failures, {self.errored} errored")


def run_schemathesis(doc: dict[str, Any], url: str, work: Path, *, max_examples: int,
                     token: str | None = None, phases: str | None = None,
                     extra: tuple[str, ...] = (), timeout: float = 240) -> FuzzRun:
    """``st run`` on ``doc`` against ``url`` with the three checks; the report, parsed."""
    work.mkdir(parents=True, exist_ok=True)
    spec = work / "openapi.json"
    spec.write_text(json.dumps(doc))
    report = work / "report.json"
    args = [sys.executable, "-m", "schemathesis.cli", "run", str(spec), "--url", url,
            "--checks", CHECKS, "--max-examples", str(max_examples), "--no-color",
            "--seed", os.environ.get("DLM_FUZZ_SEED", "20261125"),
            "--generation-database", "none", "--request-timeout", "20",
            "--report", "json", "--report-json-path", str(report), *extra]
    if phases:
        args += ["--phases", phases]
    if token:
        args += ["--header", f"Authorization: Bearer {token}"]
    # Run in ``work``: schemathesis keeps a crash cache under the working directory and replays
    # it first, which would make one run depend on the last.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.openapi_fixtures", "NO_COLOR": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    assert report.exists(), f"schemathesis wrote no report (exit {done.returncode}):\n{output}"
    data = json.loads(report.read_text())
    cases = data["test_cases"]
    return FuzzRun(done.returncode, seconds, cases["generated"], cases["with_failures"],
                   cases["errored"], data, output)


def server_log_errors(log_path: Path) -> list[str]:
    """Unhandled exceptions the server logged (the 500s), minus the HTTP parser's refusals
    of what the fuzzer sends on purpose (a NUL byte in a header)."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"level": "error"' in line and "BadHttpMessage" not in line:
            out.append(line[:2000])
    return out
