"""Shell completion (``migshark completion``) and the man page (scripts/build-manpage.py) are generated from
the argparse definition: every subcommand and every option is in them, bash completes for real, and man
renders the page without a troff warning."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dissectors.cli.completion import SHELLS, subparsers
from dissectors.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "dissectors.cli.main"]


def _commands_and_options() -> dict[str, list[str]]:
    out = {}
    for name, sub in subparsers(build_parser()):
        out[name] = [s for a in sub._actions for s in a.option_strings]
    return out


COMMANDS = _commands_and_options()


def test_the_parser_has_what_the_docs_list():
    assert {"analyze", "watch", "dissect", "check", "fleet", "record", "export-wireshark", "completion"} <= set(
        COMMANDS)
    assert "--keylog" in COMMANDS["analyze"] and "--scenario" in COMMANDS["record"]


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_names_every_subcommand_and_option(shell):
    out = subprocess.run(CLI + ["completion", shell], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    missing = [name for name in COMMANDS if name not in out.stdout]
    missing += [f"{name} {opt}" for name, opts in COMMANDS.items() for opt in opts if opt not in out.stdout]
    assert not missing, f"{shell} completion lacks {missing}"


def test_bash_completion_offers_each_subcommands_own_options():
    out = subprocess.run(CLI + ["completion", "bash"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    arrays = dict(re.findall(r"^_shtab_migshark_(\w+)_option_strings=\((.*)\)$", out.stdout, flags=re.M))
    for name, opts in COMMANDS.items():
        offered = arrays.get(name.replace("-", "_"), "").split()
        assert sorted(offered) == sorted(opts), (name, offered, opts)


def test_completion_of_an_unknown_shell_is_a_usage_error():
    out = subprocess.run(CLI + ["completion", "fish"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def _bash_complete(script: Path, words: list[str]) -> list[str]:
    """What bash's programmable completion offers for ``words`` (the last one being completed)."""
    line = " ".join(words)
    program = (f"source {script}\n"
               f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
               f"COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}\n"
               "_shtab_migshark migshark \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"\n"
               "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return [w.strip() for w in out.stdout.splitlines() if w.strip()]


def test_bash_completion_completes(tmp_path):
    script = tmp_path / "migshark.bash"
    script.write_text(subprocess.run(CLI + ["completion", "bash"], capture_output=True, text=True, cwd=ROOT,
                                     timeout=120, check=True).stdout)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert {"analyze", "analyse"} <= set(_bash_complete(script, ["migshark", "ana"]))
    assert _bash_complete(script, ["migshark", "analyze", "--key"]) == ["--keylog"]
    assert "--silent-threshold" in _bash_complete(script, ["migshark", "watch", "--s"])
    # capture arguments complete as files
    got = _bash_complete(script, ["migshark", "analyze", "captures/holdback-multifd-7.2.pc"])
    assert "captures/holdback-multifd-7.2.pcap.gz" in got


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (bash and tcsh are checked)")
def test_zsh_completion_parses(tmp_path):
    script = tmp_path / "_migshark"
    script.write_text(subprocess.run(CLI + ["completion", "zsh"], capture_output=True, text=True, cwd=ROOT,
                                     timeout=120, check=True).stdout)
    assert subprocess.run(["zsh", "-n", str(script)]).returncode == 0


@pytest.fixture(scope="module")
def manpage(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("man") / "migshark.1"
    subprocess.run([sys.executable, "scripts/build-manpage.py", str(out)], cwd=ROOT, check=True, timeout=120,
                   capture_output=True)
    return out


def test_manpage_names_every_subcommand_and_option(manpage):
    text = manpage.read_text().replace("\\-", "-")
    section = r"^\.SH COMMAND \S*'migshark ([\w-]+)'(.*?)(?=^\.SH COMMAND|\Z)"
    sections = {m.group(1): m.group(2) for m in re.finditer(section, text, flags=re.M | re.S)}
    missing = [name for name in COMMANDS if name not in sections]
    # argparse-manpage leaves out -h/--help (the page itself is the help)
    missing += [f"{name} {opt}" for name, opts in COMMANDS.items() for opt in opts
                if opt not in ("-h", "--help") and not re.search(rf"\\fB{re.escape(opt)}\b", sections.get(name, ""))]
    assert not missing, f"the man page lacks {missing}"
    assert ".SH EXIT STATUS" in manpage.read_text().upper()


def test_manpage_lists_the_subcommands_as_commands(manpage):
    """The subcommands were listed under POSITIONAL ARGUMENTS, as if they were file names: they are the
    COMMANDS section, and no section of that name is left."""
    text = manpage.read_text().replace("\\-", "-").replace(".SH\n", ".SH ")   # a title on the next line too
    heads = re.findall(r"^\.SH (.*)$", text, flags=re.M)
    assert "COMMANDS" in heads and "POSITIONAL ARGUMENTS" not in heads, heads
    commands = re.sub(r"\\f[BIR]|\\[,/]", "", text.split(".SH COMMANDS", 1)[1].split(".SH ", 1)[0])  # fonts
    assert all(f"migshark {name}" in commands for name in COMMANDS), commands


@pytest.mark.skipif(shutil.which("man") is None, reason="man (man-db) is not installed")
def test_manpage_renders_cleanly(manpage):
    out = subprocess.run(["man", "--warnings", "-l", str(manpage)], capture_output=True, text=True, timeout=60,
                         env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin", "MANPAGER": "cat", "PAGER": "cat"})
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr
    assert "migshark - dissect and analyse QEMU live-migration captures" in out.stdout
    assert "'-' (standard input), a pipe or a FIFO" in out.stdout


def test_subparsers_skips_aliases():
    names = [n for n, _ in subparsers(build_parser())]
    assert "analyse" not in names and len(names) == len(set(names))
    assert all(isinstance(p, argparse.ArgumentParser) for _, p in subparsers(build_parser()))
