"""Every code block of README.md and docs/*.md runs as written, so the docs cannot drift from the
code (issue 24: the quick start's Python snippet did not run, and re-added a storage the curl
steps had just made).

The convention (also in docs/contributing.md, "Writing docs: code blocks run"):

- ```` ```console ````: lines starting with ``$ `` are commands (a line ending in ``\\`` goes on),
  the lines after one, up to the next ``$ ``, its output. A command must exit 0, unless its output
  shows a ``dlm: error: ...`` line: then it must fail, and that line must be on its stderr (runs of
  digits match any digits: counts and ids differ). A ``dlm: warning: ...`` line must be on stderr
  too. Other output is not compared (ids and times differ).
- ```` ```sh ````: a script, run whole by ``bash -e``; it must exit 0.
- ```` ```python ````: a whole program, run by the venv's python; it must exit 0.
- ```` ```text ````, ```` ```json ````, ```` ```yaml ````, ```` ```sql ````, ```` ```policy ````,
  ```` ```csv ````: data, output, grammar or fragments; not run.
- ``<!-- not run: REASON -->`` on the line before a block (blank lines between allowed): a
  console, sh or python block that cannot run here (installs, a second long-running server,
  hosts the test does not have); the reason is required.

A block with no info string, or an unknown one, fails the test: a new block must choose.

Each document runs in order, its blocks sharing one fresh ``dlm serve`` (SQLite, a free port) and
one shell environment (``export`` in one block holds in the next), in a fresh working directory
holding a symlink ``policies`` to the repository's (commands read as from a checkout) and the
example policies by their bare names (``--policy physics.policy``). The
blocks' text is rewritten before it runs: ``localhost:8642`` and ``127.0.0.1:8642`` become the
test server, ``/tmp/dlm-`` and ``/data/`` paths land under the test's own directory (so two
xdist workers never share a payload directory). ``curl`` is a wrapper adding ``--fail-with-body``:
a 4xx answer fails the block. ``DLM_URL`` names the test server; ``HOME`` and
``XDG_CONFIG_HOME`` are the test's, so no user config file is read.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN = {"console", "sh", "python"}
NOT_RUN = {"text", "json", "yaml", "sql", "policy", "csv"}
BLOCK_TIMEOUT = 120  # seconds; a block that hangs (a `dlm serve`, an `--every`) fails, not blocks
STATUS = "__docs_test_status__"

FENCE = re.compile(r"^(\s*)```(.*)$")
NOT_RUN_MARK = re.compile(r"^<!--\s*not run:\s*(\S.*?)\s*-->$")


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    not_run: str | None = None  # the reason, when marked

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc``, with the ``not run`` mark before each, if any."""
    lines = doc.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, lang = match.group(1), match.group(2).strip()
        end = i + 1
        while end < len(lines) and lines[end].rstrip() != indent + "```":
            end += 1
        body = "\n".join(line[len(indent):] for line in lines[i + 1:end]) + "\n"
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        mark = NOT_RUN_MARK.match(lines[before].strip()) if before >= 0 else None
        found.append(Block(doc, i + 1, lang, body, mark.group(1) if mark else None))
        i = end + 1
    return found


def doc_id(doc: Path) -> str:
    return str(doc.relative_to(REPO))


@pytest.mark.parametrize("doc", DOCUMENTS, ids=doc_id)
def test_every_block_is_run_or_marked(doc: Path) -> None:
    """A block either runs (console, sh, python) or says it does not (data kinds, the mark)."""
    found = blocks(doc)
    wrong = [f"{b.where}: ```{b.lang or '(no info string)'}: neither run "
             f"({', '.join(sorted(RUN))}) nor marked (```text or <!-- not run: reason -->)"
             for b in found if b.lang not in RUN | NOT_RUN and not b.not_run]
    wrong += [f"{b.where}: ```{b.lang} is never run; the <!-- not run --> mark is for "
              f"console, sh and python blocks" for b in found if b.lang in NOT_RUN and b.not_run]
    assert wrong == []


def test_blocks_parser() -> None:
    """The parser finds indented fences, the language and the mark across a blank line."""
    doc = REPO / "docs" / "operator-guide.md"
    langs = {b.lang for b in blocks(doc)}
    assert "sql" in langs  # the indented one, inside a list item
    marked = Block(doc, 1, "sh", "", None)
    assert marked.where == "docs/operator-guide.md:1"
    assert NOT_RUN_MARK.match("<!-- not run: installs a venv -->").group(1) == "installs a venv"
    assert NOT_RUN_MARK.match("<!-- not run: -->") is None  # a reason is required


# ---------------------------------------------------------------------------------- running

@dataclass
class Command:
    line: int
    text: str
    output: list[str] = field(default_factory=list)


def console_commands(block: Block) -> list[Command]:
    """``$ `` commands with their continuation lines and the output lines after them."""
    commands: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            text, start = line[2:], i
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            commands.append(Command(block.line + 1 + start, text))
        elif commands:
            commands[-1].output.append(line)
        i += 1
    return commands


def message_pattern(line: str) -> re.Pattern[str]:
    """A documented ``dlm: error:`` line as a pattern: any digits where it shows digits."""
    return re.compile(re.sub(r"\d+", r"\\d+", re.escape(line.strip())))


class DocRun:
    """One document's environment: its server, directories and shell state."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.work = root / "work"
        self.bin = root / "bin"
        for d in (self.work, self.bin, root / "home", root / "config"):
            d.mkdir(parents=True)
        (self.work / "policies").symlink_to(REPO / "policies")
        for policy in (REPO / "policies" / "examples").glob("*.policy"):
            (self.work / policy.name).symlink_to(policy)
        curl = shutil.which("curl")
        wrapper = self.bin / "curl"
        wrapper.write_text(f"#!/bin/sh\nexec {curl} --fail-with-body \"$@\"\n")
        wrapper.chmod(0o755)
        self.state = root / "env.sh"
        venv_bin = Path(sys.executable).parent
        self.state.write_text("".join(
            f"export {k}={shlex.quote(v)}\n" for k, v in {
                "PATH": f"{self.bin}:{venv_bin}:/usr/local/bin:/usr/bin:/bin",
                "DLM_URL": url, "HOME": str(root / "home"),
                "XDG_CONFIG_HOME": str(root / "config"), "PYTHONPATH": str(REPO),
                "NO_COLOR": "1", "LC_ALL": "C.UTF-8"}.items()))

    def substitute(self, text: str) -> str:
        host = self.url.removeprefix("http://")
        text = re.sub(r"\b(localhost|127\.0\.0\.1):8642\b", host, text)
        text = text.replace("/tmp/dlm-", f"{self.root}/tmp/dlm-")
        return re.sub(r"(?<![\w./-])/data/", f"{self.root}/data/", text)

    def bash(self, script: str) -> subprocess.CompletedProcess[str]:
        """``script`` in bash with the document's shell state, which it updates."""
        wrapped = f"source {shlex.quote(str(self.state))}\n{script}\n" \
                  f"__rc=$?; export -p > {shlex.quote(str(self.state))}; exit $__rc\n"
        return subprocess.run(["bash", "-c", wrapped], cwd=self.work, capture_output=True,
                              text=True, timeout=BLOCK_TIMEOUT, env={})

    def run(self, block: Block) -> None:
        text = self.substitute(block.text)
        if block.lang == "sh":
            result = self.bash(f"set -e\n{text}")
            assert result.returncode == 0, report(block, text, result)
        elif block.lang == "python":
            script = self.root / f"block-{block.line}.py"
            script.write_text(text)
            result = self.bash(f"python {shlex.quote(str(script))}")
            assert result.returncode == 0, report(block, text, result)
        else:
            self.run_console(block)

    def run_console(self, block: Block) -> None:
        for command in console_commands(block):
            text = self.substitute(command.text)
            result = self.bash(text)
            expected = [self.substitute(line) for line in command.output]
            errors = [line for line in expected if line.startswith("dlm: error:")]
            where = f"{block.doc.relative_to(REPO)}:{command.line}"
            if errors:
                assert result.returncode != 0, report(block, text, result, where,
                                                      "documented as an error, but it exited 0")
            else:
                assert result.returncode == 0, report(block, text, result, where)
            for line in errors + [x for x in expected if x.startswith("dlm: warning:")]:
                assert message_pattern(line).search(result.stderr), report(
                    block, text, result, where, f"documented message not on stderr: {line}")


def report(block: Block, text: str, result: subprocess.CompletedProcess[str],
           where: str | None = None, why: str = "") -> str:
    return (f"{where or block.where} ({block.lang}) {why} exit {result.returncode}\n"
            f"--- ran:\n{text}\n--- stdout:\n{result.stdout[-3000:]}\n"
            f"--- stderr:\n{result.stderr[-3000:]}")


def wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} not healthy after {timeout}s"
        time.sleep(0.05)


RUNNABLE = [doc for doc in DOCUMENTS
            if any(b.lang in RUN and not b.not_run for b in blocks(doc))]


@pytest.mark.parametrize("doc", RUNNABLE, ids=doc_id)
def test_doc_blocks_run(doc: Path, tmp_path: Path, server_process) -> None:
    """The document's runnable blocks, in order, against a fresh server."""
    server = server_process(None).start()
    wait_healthy(server.url)
    run = DocRun(tmp_path / "doc", server.url)
    for block in blocks(doc):
        if block.lang in RUN and not block.not_run:
            run.run(block)


def test_console_commands_and_messages() -> None:
    """``$ `` lines, continuations and output are told apart; digits in a message match any."""
    block = Block(REPO / "README.md", 10, "console",
                  "$ dlm a \\\n  --b\nout 1\n$ dlm c\ndlm: error: x: 25001 item(s)\n")
    first, second = console_commands(block)
    assert (first.line, first.text, first.output) == (11, "dlm a \\\n  --b", ["out 1"])
    assert (second.line, second.text) == (14, "dlm c")
    pattern = message_pattern(second.output[0])
    assert pattern.search("dlm: error: x: 3 item(s)\n")
    assert not pattern.search("dlm: error: y: 3 item(s)\n")
