"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import synth as S


@pytest.fixture
def cap(tmp_path: Path) -> Callable[[list[S.Conn]], str]:
    """Writes synthetic connections (tests/synth.py) to a capture file and returns its path."""
    def build(conns: list[S.Conn]) -> str:
        path = str(tmp_path / "x.pcap")
        S.write_capture(path, conns)
        return path
    return build
