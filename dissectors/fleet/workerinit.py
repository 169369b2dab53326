"""What each worker of the local cluster runs as it starts: a Dask worker preload (``dask_setup``).

Ctrl-C on a terminal sends SIGINT to the whole foreground process group: to ``migshark fleet``, and to
the local cluster's fork server and worker processes too. The ``migshark`` process answers it by closing
the cluster (exit code 130), which stops the workers. Each worker, left to Python's default, also died
of it on its own, printing a ``KeyboardInterrupt`` traceback per worker on the terminal (asyncio's, then
multiprocessing's), and the run sometimes took 4 s to end instead of under one. So a local worker ignores
SIGINT; it still ends with the cluster, or with SIGTERM. (Multiprocessing's fork server already ignores
SIGINT itself, but gives its children back the default handler.) An existing cluster's workers
(``--scheduler``) are not started by ``migshark`` and are left as they are.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


def dask_setup(worker: Any) -> None:
    """Called by Dask in each local worker process as the worker starts, on its main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
