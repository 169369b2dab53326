# SPDX-License-Identifier: GPL-2.0-or-later
"""One QEMU process (source or destination): started in its own process group, driven over QMP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from .qemus import EnvironmentProblem, QemuInstall

logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


# A QEMU whose main thread blocks (11.1 peeking at a silent preempt channel) stops answering QMP: every
# command times out; once one has, the next ones wait only briefly until the monitor answers again.
QMP_TIMEOUT_S = 10.0
HUNG_QMP_TIMEOUT_S = 1.0


class QmpFailed(Exception):
    """A QMP command returned an error (the message is QEMU's)."""


class QemuSide:
    def __init__(
        self,
        role: str,
        install: QemuInstall,
        cmd: list[str],
        workdir: Path,
        qmp_socket: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.role = role
        self.install = install
        self.cmd = cmd
        self.qmp_socket = qmp_socket
        self.stderr_path = workdir / f"{role}.stderr"
        self.env = {**os.environ, **install.env, **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.qmp: QMPClient | None = None
        self.events: list[dict[str, Any]] = []
        self.qmp_log: list[dict[str, Any]] = []
        self.qmp_hung = False  # the last QMP command got no answer in time
        self.qmp_timeouts = 0
        self._event_task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30.0) -> None:
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EnvironmentProblem(f"{self.role} QEMU exited at start: {self.stderr().strip()}")
            if self.qmp_socket.exists():
                client = QMPClient(self.role)
                try:
                    await client.connect(str(self.qmp_socket))
                except (OSError, QMPError):
                    await asyncio.sleep(0.05)
                    continue
                self.qmp = client
                self._event_task = asyncio.ensure_future(self._collect_events())
                return
            await asyncio.sleep(0.05)
        raise EnvironmentProblem(f"{self.role} QEMU: no QMP socket after {timeout} s")

    async def _collect_events(self) -> None:
        assert self.qmp is not None
        with contextlib.suppress(asyncio.CancelledError, QMPError):
            async for ev in self.qmp.events:
                ts = ev.get("timestamp", {})
                self.events.append(
                    {
                        "time": time.time(),
                        "qemu_time": ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6,
                        "event": ev.get("event"),
                        "data": ev.get("data", {}),
                    }
                )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def execute(self, command: str, arguments: dict[str, Any] | None = None, *, log: bool = True) -> Any:
        if self.qmp is None or not self.alive():
            raise QmpFailed(f"{self.role} QEMU is not running")
        entry: dict[str, Any] = {"time": time.time(), "command": command}
        if arguments:
            entry["arguments"] = arguments
        timeout = HUNG_QMP_TIMEOUT_S if self.qmp_hung else QMP_TIMEOUT_S
        try:
            result = await asyncio.wait_for(self.qmp.execute(command, arguments), timeout=timeout)
        except TimeoutError as exc:
            self.qmp_hung = True
            self.qmp_timeouts += 1
            entry["error"] = f"timeout: no QMP answer within {timeout:g} s"
            self.qmp_log.append(entry)
            raise QmpFailed(entry["error"]) from exc
        except (QMPError, OSError, EOFError) as exc:
            entry["error"] = str(exc) or type(exc).__name__
            self.qmp_log.append(entry)
            raise QmpFailed(entry["error"]) from exc
        self.qmp_hung = False
        if log:
            entry["result"] = result
            self.qmp_log.append(entry)
        return result

    async def try_execute(self, command: str, arguments: dict[str, Any] | None = None, *, log: bool = True) -> Any:
        with contextlib.suppress(QmpFailed):
            return await self.execute(command, arguments, log=log)
        return None

    async def migration_status(self) -> str | None:
        info = await self.try_execute("query-migrate", log=False)
        return info.get("status") if isinstance(info, dict) else None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    async def stop(self) -> int | None:
        """Quit over QMP, then SIGTERM / SIGKILL the process group. Returns the exit status."""
        if self.alive():
            await self.try_execute("quit")
        if self.qmp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.qmp.disconnect(), timeout=3)
        if self._event_task is not None:
            self._event_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._event_task
        if self.proc is None:
            return None
        # after "quit" a QEMU exits in well under a second; a busy machine can stretch that past a few seconds,
        # and the exit status is part of the manifest (tests check it): wait before signalling
        for sig, wait in ((None, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if sig is not None and self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
            deadline = time.monotonic() + wait
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.proc.poll() is not None:
                break
        return self.proc.poll()
