"""The commands shown in the documentation, found and run: every ```console block of README.md and docs/*.md
(docs/**) whose lines start with ``$ `` is a command followed by its output. tests/test_docs_examples.py runs
them and compares; scripts/update-docs-examples.py rewrites the shown output from a real run.

A block may be preceded by a marker comment (one line, options separated by commas):

    <!-- docs-test: exit 1, head 12 -->            exit code expected (default 0), output shown = first 12 lines
    <!-- docs-test: skip needs root and QEMU -->   not run, with that reason (the last option)
    <!-- docs-test: live -->                       run only with the live marker (records with QEMU, root)
    <!-- docs-test: needs tshark -->               skipped (saying so) where that program is not installed
    <!-- docs-test: stdout only -->                standard error is not shown (it depends on the user: root...)

A command line ending in a backslash goes on on the next line.

Shown output is compared line by line (trailing blanks ignored). A line ``...`` (maybe indented) marks a trimmed
output: the shown lines must then appear in the real output in that order; without one it must be equal.
Commands run with bash (no pipefail: the exit code is the last command's, as a user's shell gives) in a
scratch directory holding ``captures`` (the corpus) and an empty ``docs/img``, ``migshark`` being this
checkout's command line, stderr merged into stdout, piped (no progress, 80 columns), TZ=UTC.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
TRIM = "..."


@dataclass
class Command:
    line: str                         # the command, without "$ "
    shown: list[str] = field(default_factory=list)


@dataclass
class Block:
    file: Path
    start: int                        # index of the ```console line
    end: int                          # index of the closing ```
    commands: list[Command]
    exit: int = 0
    head: int | None = None
    skip: str | None = None
    live: bool = False
    needs: list[str] = field(default_factory=list)
    stdout_only: bool = False

    @property
    def name(self) -> str:
        shown = self.file.relative_to(ROOT) if self.file.is_relative_to(ROOT) else self.file
        return f"{shown}:{self.start + 1}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


def _options(text: str, block: Block) -> None:
    head, sep, reason = text.partition("skip")          # "skip REASON" comes last: its reason may hold commas
    if sep:
        block.skip = reason.strip() or "marked skip"
    for part in (p.strip() for p in head.split(",")):
        if part.startswith("exit "):
            block.exit = int(part.split()[1])
        elif part.startswith("head "):
            block.head = int(part.split()[1])
        elif part == "live":
            block.live = True
        elif part == "stdout only":
            block.stdout_only = True
        elif part.startswith("needs "):
            block.needs += part.split()[1:]
        elif part:
            raise ValueError(f"{block.name}: unknown docs-test option {part!r}")


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```console":
            j = i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            cmds: list[Command] = []
            going_on = False
            for line in lines[i + 1:j]:
                if going_on:
                    cmds[-1].line += "\n" + line
                elif line.startswith("$ "):
                    cmds.append(Command(line[2:]))
                elif cmds:
                    cmds[-1].shown.append(line.rstrip())
                elif line.strip():
                    raise ValueError(f"{path}:{i + 1}: a console block starts with a command ($ ...)")
                going_on = bool(cmds) and cmds[-1].shown == [] and cmds[-1].line.endswith("\\")
            b = Block(path, i, j, cmds)
            m = MARKER.match(lines[i - 1]) if i else None
            if m:
                _options(m.group(1), b)
            out.append(b)
            i = j
        i += 1
    return out


def unchecked_blocks(path: Path) -> list[str]:
    """Shell code shown outside a ```console block (```sh, ```bash, ```shell): commands no test runs."""
    found = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if re.match(r"^\s*```\s*(sh|bash|shell|zsh)\s*$", line):
            found.append(f"{path.relative_to(ROOT)}:{n}")
    return found


def all_blocks() -> list[Block]:
    return [b for f in doc_files() for b in blocks(f)]


def scratch() -> Path:
    """A directory to run the examples in: the corpus, docs/img for plots, and a ``migshark`` on PATH."""
    d = Path(tempfile.mkdtemp(prefix="migshark-docs-"))
    (d / "captures").symlink_to(ROOT / "captures")
    (d / "docs" / "img").mkdir(parents=True)
    (d / "bin").mkdir()
    shim = d / "bin" / "migshark"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m dissectors.cli.main "$@"\n')
    shim.chmod(0o755)
    return d


def run(cmd: Command, where: Path, timeout: float = 600, stdout_only: bool = False) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PATH"] = f"{where / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONPATH"] = str(ROOT)
    env["TZ"] = "UTC"                # wall-clock times in the reports do not depend on the machine
    out = subprocess.run(["bash", "-c", cmd.line], cwd=where, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL if stdout_only else subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         text=True, timeout=timeout)
    lines = [line.rstrip() for line in out.stdout.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return out.returncode, lines


def mismatch(shown: list[str], real: list[str]) -> str | None:
    """None when ``shown`` is what ``real`` gives (equal, or in order where trimmed), else why not."""
    shown = [TRIM if s.strip() == TRIM else s for s in shown]      # "  ..." (indented) trims too
    if TRIM not in shown:
        if shown == real:
            return None
        for n, (a, b) in enumerate(zip(shown, real, strict=False)):
            if a != b:
                return f"line {n + 1} shown {a!r}, real {b!r}"
        return f"{len(shown)} lines shown, {len(real)} real"
    pos = 0
    for line in (s for s in shown if s != TRIM):
        while pos < len(real) and real[pos] != line:
            pos += 1
        if pos == len(real):
            return f"shown line {line!r} is not in the real output (in this order)"
        pos += 1
    return None


def shown_for(block: Block, cmd: Command, real: list[str]) -> list[str]:
    """What the docs should show for ``real`` (the update script writes it)."""
    if block.head is not None and len(real) > block.head:
        return real[:block.head] + [TRIM]
    if any(s.strip() == TRIM for s in cmd.shown) and mismatch(cmd.shown, real) is None:
        return cmd.shown                       # a hand-trimmed output that still holds is kept as it is
    return real
