#!/usr/bin/env python3
"""Write migshark(1), the man page, from the command line's argparse definition (argparse-manpage; see
dissectors/cli/completion.py for why). Usage: scripts/build-manpage.py [OUT] (default build/man/migshark.1;
'-' for stdout). Read it with ``man -l build/man/migshark.1``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from argparse_manpage.manpage import Manpage  # noqa: E402

from dissectors import __version__  # noqa: E402
from dissectors.cli.main import build_parser  # noqa: E402

SEE_ALSO = ("tshark(1), tcpdump(8), wireshark(1); the documentation site built from docs/ "
            "(mkdocs build), docs/report-schema.md for --json")


def manpage() -> str:
    page = Manpage(build_parser())
    page.source = f"migshark {__version__}"
    page.manual = "migshark manual"
    page.description = "dissect and analyse QEMU live-migration captures"
    page.add_section("exit status", "=", "0 clean, 1 findings (misclassification, stall, failure, regression, "
                                        "malformed records), 2 usage or input error.")
    page.add_section("see also", "=", SEE_ALSO)
    # argparse-manpage does not escape a text line that starts with roff's control characters (' or a
    # '.' that is no request): '\&' in front makes troff print it ("'-' (standard input), ...").
    return "".join("\\&" + line if _text_as_control(line) else line
                   for line in str(page).splitlines(keepends=True))


REQUESTS = {"TH", "SH", "SS", "TP", "PP", "IP", "B", "I", "BR", "RS", "RE", "nf", "fi", "br"}


def _text_as_control(line: str) -> bool:
    if line.startswith("'"):
        return True
    return line.startswith(".") and (line[1:].split() or [""])[0] not in REQUESTS


def main(argv: list[str]) -> int:
    out = argv[1] if len(argv) > 1 else "build/man/migshark.1"
    text = manpage()
    if out == "-":
        sys.stdout.write(text)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
