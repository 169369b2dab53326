# SPDX-License-Identifier: GPL-2.0-or-later
"""Freeze the source's "timer" section on a chosen value before a stopped-source migration.

QEMU's ``timer`` device (``system/cpu-timers.c``, ``vmstate_timers``: registered first, section id 0) saves
``cpu_ticks_offset`` (be64), 8 unused zero bytes, then ``cpu_clock_offset``. While the VM is stopped
``cpu_ticks_offset`` does not move (``cpu_disable_ticks`` folded the host ticks in), so the body a
migration of the stopped VM will carry can be read beforehand.

The probe is QMP ``xen-save-devices-state`` (``migration/savevm.c``: despite its name a generic command;
``qemu_save_device_state`` writes the QEVM header and every non-RAM section, each ``SECTION_FULL`` as in
a migration's device-state part, then EOF). Unlike a migration to a file it leaves a stopped VM in the
``paused`` state (a migration leaves it ``postmigrate``, from which QEMU refuses to migrate again:
"Can't migrate the vm that was paused due to previous migration"), and it writes no RAM.

:func:`freeze_timer` runs the stopped source for a random few milliseconds (``cont``, sleep, ``stop``),
saves its device state, reads the timer section with the main-channel parser, and repeats until the low
byte of ``cpu_ticks_offset`` is the wanted one (0x7e: the body then holds ``7e 00 00 00 00``, the footer
of section 0, followed by zeros that read as EOF). The source is left paused with that value frozen; the
next migration carries exactly that body (the tests check it on the capture).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dissectors.channels import kinds as K
from dissectors.channels.main import MainParser

from .side import QemuSide, QmpFailed

TIMER_IDSTR = "timer"
RUN_MS = (1.0, 25.0)  # how long the guest runs between two probes (uniform, milliseconds)


@dataclass
class TimerProbe:
    """What :func:`freeze_timer` did (written to the manifest as ``timer_probe``)."""

    want_low_byte: int
    attempts: int = 0
    cpu_ticks_offset: int | None = None
    body_hex: str | None = None
    elapsed_s: float = 0.0
    low_bytes_seen: list[int] = field(default_factory=list)
    events_during_probe: dict[str, int] = field(default_factory=dict)
    qmp_commands_during_probe: dict[str, int] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return self.cpu_ticks_offset is not None and self.cpu_ticks_offset & 0xFF == self.want_low_byte

    def to_dict(self) -> dict[str, Any]:
        return {
            "want_low_byte": f"0x{self.want_low_byte:02x}",
            "found": self.found,
            "attempts": self.attempts,
            "cpu_ticks_offset": self.cpu_ticks_offset,
            "cpu_ticks_offset_hex": None if self.cpu_ticks_offset is None else f"0x{self.cpu_ticks_offset:016x}",
            "timer_body_hex": self.body_hex,
            "elapsed_s": round(self.elapsed_s, 3),
            "low_bytes_seen": self.low_bytes_seen,
            "events_during_probe": self.events_during_probe,
            "qmp_commands_during_probe": self.qmp_commands_during_probe,
        }


def timer_body(stream: bytes) -> bytes | None:
    """The timer section's body in a migration stream (its first 24 bytes: the fields version 2 saves),
    found through the main-channel parser's section header (its offset does not depend on where the
    parser decides the body ends)."""
    parser = MainParser()
    records = [*parser.feed(stream, 0.0), *parser.eof(0.0)]
    for r in records:
        if r.kind == K.DEVICE_STATE and r.fields.get("idstr") == TIMER_IDSTR:
            return stream[r.offset:r.offset + 24]
    return None


async def freeze_timer(
    src: QemuSide,
    work: Path,
    want_low_byte: int,
    *,
    max_attempts: int,
    mark: Callable[..., None],
    rng: random.Random | None = None,
) -> TimerProbe:
    """Run and stop the source until a migration of it would carry a timer section whose
    ``cpu_ticks_offset`` ends in ``want_low_byte``; leave it paused. The probes' QMP traffic is not kept
    command by command (hundreds of them): the result counts the commands and events instead."""
    rng = rng or random.Random()
    probe = TimerProbe(want_low_byte)
    path = work / "timer-probe.mig"
    events_from = len(src.events)
    commands: Counter[str] = Counter()
    t0 = time.monotonic()
    mark("timer probe: start", want_low_byte=f"0x{want_low_byte:02x}")
    await src.execute("stop")
    try:
        while probe.attempts < max_attempts:
            probe.attempts += 1
            if probe.attempts > 1:
                await src.execute("cont", log=False)
                await asyncio.sleep(rng.uniform(*RUN_MS) / 1000)
                await src.execute("stop", log=False)
                commands.update(("cont", "stop"))
            path.unlink(missing_ok=True)
            await src.execute("xen-save-devices-state", {"filename": src.install.qemu_path(path), "live": False},
                              log=False)
            commands["xen-save-devices-state"] += 1
            body = timer_body(path.read_bytes())
            if body is None or len(body) < 8:
                raise QmpFailed(f"timer probe {probe.attempts}: no timer section in the stream")
            probe.cpu_ticks_offset = int.from_bytes(body[:8], "big", signed=True)
            probe.body_hex = body.hex()
            probe.low_bytes_seen.append(probe.cpu_ticks_offset & 0xFF)
            if probe.found:
                break
    finally:
        path.unlink(missing_ok=True)
        probe.elapsed_s = time.monotonic() - t0
        probe.events_during_probe = dict(Counter(str(e["event"]) for e in src.events[events_from:]))
        del src.events[events_from:]  # counted above; the manifest keeps the real migration's events
        probe.qmp_commands_during_probe = dict(commands)
    mark("timer probe: done", attempts=probe.attempts, found=probe.found, cpu_ticks_offset=probe.body_hex)
    return probe
