"""scripts/wireshark-screenshot.sh reproduces docs/wireshark-gui.png: real Wireshark (Qt) under Xvfb as an
unprivileged user, with the exported qmig plugin, on a real corpus capture."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ["wireshark", "Xvfb", "xdotool", "import"]

pytestmark = [pytest.mark.tshark,
              pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                 reason="needs wireshark-qt, xvfb, xdotool and imagemagick")]


def test_screenshot_script_draws_the_misclassified_channel(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "gui.png"
    res = subprocess.run(["sh", str(ROOT / "scripts" / "wireshark-screenshot.sh"), str(out)], cwd=ROOT,
                         env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    img = Image.open(out)
    assert img.size == (1280, 860)
    assert out.stat().st_size < 200_000                  # kept small: a 64-colour palette
    colours = img.convert("RGB").getcolors(maxcolors=4096)
    assert colours is not None and len(colours) > 8     # a drawn window, not a blank screen
    # the selected row's highlight (Wireshark's selection blue) sits in the packet list and in the
    # details pane, where the QMIG tree was opened
    rgb = img.convert("RGB")
    blue_rows = {y for y in range(0, 860, 2) if rgb.getpixel((640, y))[2] > 150 > rgb.getpixel((640, y))[0]}
    assert any(y < 280 for y in blue_rows) and any(y > 280 for y in blue_rows)


def test_docs_show_the_screenshot() -> None:
    text = (ROOT / "docs" / "wireshark.md").read_text()
    assert "wireshark-gui.png" in text and "scripts/wireshark-screenshot.sh" in text
    assert (ROOT / "docs" / "wireshark-gui.png").stat().st_size < 200_000
