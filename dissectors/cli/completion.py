"""``migshark completion bash|zsh``: a shell completion script, and the man page, both generated from
the one argparse definition (``main.build_parser``), so they cannot drift from the command line.

Completion uses shtab: it writes a static script from the parser, so pressing TAB runs no Python (argcomplete
would start migshark, and import Scapy, on every TAB); bash and zsh (its tcsh output lacks the subcommands'
options). The man page uses
argparse-manpage (roff from the same parser, subcommands included; help2man would scrape ``--help`` text
and knows nothing of subcommands); it is only needed to build the page (``scripts/build-manpage.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

SHELLS = ("bash", "zsh")   # shtab also writes tcsh, but without the subcommands' options

#: arguments that name files or directories: completed as paths
PATH_ARGUMENTS = {"capture", "captures", "paths", "keylog", "plot", "out", "output", "from_list"}


def subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every subcommand's parser (aliases left out), in the order ``--help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield name, sub


def completion_parser() -> argparse.ArgumentParser:
    """The command line's parser, with path arguments marked for shtab's file completion."""
    import shtab

    from dissectors.cli.main import build_parser

    parser = build_parser()
    for _, sub in subparsers(parser):
        for action in sub._actions:
            if action.dest in PATH_ARGUMENTS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
    return parser


def completion_script(shell: str) -> str:
    import shtab

    return shtab.complete(completion_parser(), shell=shell)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=SHELLS, help="the shell to write the script for")
    p.epilog = ("bash: migshark completion bash > /etc/bash_completion.d/migshark (or source <(migshark "
                "completion bash)); zsh: migshark completion zsh > ~/.zfunc/_migshark with ~/.zfunc in $fpath")


def run(args: argparse.Namespace) -> int:
    try:
        script = completion_script(args.shell)
    except ImportError:
        print("migshark: error: completion needs shtab (pip install shtab)", file=sys.stderr)
        return 2
    sys.stdout.write(script if script.endswith("\n") else script + "\n")
    return 0
