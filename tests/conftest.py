"""Test-session order: the fleet tests run last.

Their real Dask LocalCluster leaves process-wide state behind after it closes: later asyncio subprocesses
(pyshark's tshark) lose their exit status ("Unknown child process pid N, will report returncode 255") and
pyshark reports a tshark crash. Run alone or before the fleet tests, the pyshark tests pass; so the fleet
modules go to the end of the session. Found but not yet explained: see the session note.
"""

from __future__ import annotations

import pytest

LAST = ("test_fleet",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name.startswith(LAST))     # stable: the rest keeps its order
