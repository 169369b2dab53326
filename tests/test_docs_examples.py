"""Every command shown in README.md and docs/ (```console blocks, scripts/docs_examples.py) runs and gives
the output and exit code the docs show; the documentation site builds with warnings as errors.
After a change of output format: scripts/update-docs-examples.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import docs_examples as dx

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = dx.all_blocks()


def _param(b: dx.Block):
    marks = []
    if b.skip:
        marks.append(pytest.mark.skip(reason=f"{b.name}: {b.skip}"))
    if b.live:
        marks.append(pytest.mark.live)
    for prog in b.needs:
        if shutil.which(prog) is None:
            marks.append(pytest.mark.skip(reason=f"{b.name}: needs {prog}, not installed"))
    return pytest.param(b, id=b.name, marks=marks)


@pytest.fixture(scope="module")
def where():
    d = dx.scratch()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_docs_show_commands():
    files = {b.file.name for b in BLOCKS}
    assert {"README.md", "getting-started.md", "capturing.md"} <= files, files
    assert sum(len(b.commands) for b in BLOCKS) >= 10


def test_no_shell_block_escapes_the_tests():
    """Commands are shown in ```console blocks (run, or skipped with a reason), never in ```sh ones."""
    found = [n for f in dx.doc_files() for n in dx.unchecked_blocks(f)]
    assert not found, "shell blocks no test runs (make them ```console with '$ ' commands): " + ", ".join(found)


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_docs_example(block, where):
    for cmd in block.commands:
        code, real = dx.run(cmd, where, stdout_only=block.stdout_only)
        assert code == block.exit, (f"{block.name}: `{cmd.line}` exited {code}, the docs say {block.exit}\n"
                                    + "\n".join(real[-20:]))
        why = dx.mismatch(cmd.shown, real)
        assert why is None, (f"{block.name}: `{cmd.line}`: {why}\n(run scripts/update-docs-examples.py after a "
                             "deliberate output change)\nreal output:\n" + "\n".join(real[:60]))


def test_plots_shown_in_the_docs_are_drawn_by_their_commands(where):
    """A picture a page shows from docs/img/ is what one of its commands writes (``--plot docs/img/X``)."""
    for page in (ROOT / "docs").rglob("*.md"):
        text = page.read_text()
        for img in set(__import__("re").findall(r"\]\((?:\.\./)*img/([\w.-]+\.png)\)", text)):
            assert f"--plot docs/img/{img}" in text, f"{page.name} shows img/{img} but no command draws it"
            assert (ROOT / "docs" / "img" / img).is_file(), img


# The checker itself: trimmed and full outputs, and a mismatch is found.

def test_mismatch_rules():
    real = ["a", "b", "c", "d"]
    assert dx.mismatch(["a", "b", "c", "d"], real) is None
    assert dx.mismatch(["a", "...", "c"], real) is None
    assert dx.mismatch(["a", "...", "d", "c"], real) is not None      # order matters
    assert dx.mismatch(["a", "b"], real) == "2 lines shown, 4 real"    # untrimmed must be whole
    assert "line 2" in dx.mismatch(["a", "x", "c", "d"], real)


def test_blocks_and_markers(tmp_path, monkeypatch):
    monkeypatch.setattr(dx, "ROOT", tmp_path)
    page = tmp_path / "p.md"
    page.write_text("text\n<!-- docs-test: exit 1, head 2 -->\n```console\n$ echo hi\nhi\n$ false\n```\n"
                    "<!-- docs-test: skip needs root -->\n```console\n$ sudo x\n```\n")
    one, two = dx.blocks(page)
    assert (one.exit, one.head, [c.line for c in one.commands], one.commands[0].shown) == (1, 2, ["echo hi", "false"],
                                                                                          ["hi"])
    assert two.skip == "needs root" and one.name == "p.md:3"


def test_update_script_rewrites_a_stale_block(tmp_path):
    page = tmp_path / "stale.md"
    page.write_text("```console\n$ migshark analyze --help | head -1\nusage: old\n```\n")
    out = subprocess.run([sys.executable, "scripts/update-docs-examples.py", str(page)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert page.read_text().splitlines()[2].startswith("usage: migshark analyze [-h]")
    assert "1 block(s) updated" in out.stdout


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
                    reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_site_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    out = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for page in ("index.html", "getting-started/index.html", "capturing/index.html", "architecture/index.html",
                 "signatures/multifd-taken-as-main/index.html", "report.schema.json"):
        assert (tmp_path / "site" / page).is_file(), page


def test_getting_started_installs_as_the_readme_does():
    """The install command is shown twice (README and the site's first page): the same command."""
    def install(name: str) -> list[str]:
        return [c.line for b in BLOCKS if b.file.name == name for c in b.commands if "apt-get install" in c.line]

    readme, page = install("README.md"), install("getting-started.md")
    assert readme and readme == page, (readme, page)
    assert readme[0].startswith("$(command -v sudo) apt-get update && $(command -v sudo) apt-get install")
