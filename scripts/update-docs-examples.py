#!/usr/bin/env python3
"""Rerun every ```console example of README.md and docs/ and rewrite the output they show (and the plots
they draw into docs/img/), after a change to the report's format. See scripts/docs_examples.py for the
block format. Usage: scripts/update-docs-examples.py [FILE.md ...] (default: all); prints what changed
and the blocks it could not update (a hand-trimmed output whose shown lines are gone: trim it again)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import docs_examples as dx  # noqa: E402


def update(path: Path, where: Path) -> int:
    lines = path.read_text().splitlines()
    changed = 0
    for block in reversed(dx.blocks(path)):          # from the end: indexes before stay valid
        if block.skip or block.live:
            continue
        body: list[str] = []
        for cmd in block.commands:
            code, real = dx.run(cmd, where, stdout_only=block.stdout_only)
            shown = dx.shown_for(block, cmd, real)
            if any(x.strip() == dx.TRIM for x in cmd.shown) and block.head is None and shown is real:
                print(f"{block.name}: trimmed output no longer holds; shown in full, trim it again")
            if code != block.exit:
                print(f"{block.name}: `{cmd.line}` exits {code}, the marker says {block.exit}: fix the marker")
            body += [f"$ {cmd.line}"] + shown
        if body != lines[block.start + 1:block.end]:
            lines[block.start + 1:block.end] = body
            changed += 1
            print(f"{block.name}: updated")
    if changed:
        path.write_text("\n".join(lines) + "\n")
    return changed


def main(argv: list[str]) -> int:
    files = [Path(a).resolve() for a in argv[1:]] or dx.doc_files()
    where = dx.scratch()
    try:
        total = sum(update(f, where) for f in files)
        images = sorted((where / "docs" / "img").glob("*"))
        for img in images:
            shutil.copyfile(img, dx.ROOT / "docs" / "img" / img.name)
        print(f"{total} block(s) updated, {len(images)} picture(s) written to docs/img/")
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
