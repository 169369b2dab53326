# SPDX-License-Identifier: GPL-2.0-or-later
"""Device sections kept until the VMDESCRIPTION arrives, then decoded (``dissectors.vmstate``).

The main parser hands over each device section's body as it scans it and the VMDESCRIPTION's JSON; this
keeps them within :data:`MAX_KEPT_BYTES` / :data:`MAX_KEPT_SECTIONS` per main channel (sizes are kept past
the bounds, the bytes are not) and turns them into ``device.vmstate`` records: the decoded fields when the
description names the device, else why not (no description: postcopy or a capture cut short; a body
past the bound; a section the description does not cover).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dissectors.vmstate import DescriptionError, decode_device, parse_description
from dissectors.vmstate.decode import Budget
from dissectors.vmstate.description import MAX_DESCRIPTION

#: Device-section bytes kept per main channel (a PC guest sends ~50 KB of device state).
MAX_KEPT_BYTES = 16 << 20
#: Device sections remembered per main channel (a guest has a few hundred at most).
MAX_KEPT_SECTIONS = 10_000

#: Why device state is not decoded when the stream ends without a VMDESCRIPTION.
NO_DESCRIPTION_POSTCOPY = "no VMDESCRIPTION: a postcopy stream carries none (device state sent PACKAGED)"
#: A ``device.vmstate`` record to emit: offset, length, fields, the section's body (None: not kept).
Found = tuple[int, int, dict[str, Any], "bytes | None"]

NO_DESCRIPTION_GAP = "no VMDESCRIPTION: bytes of it were not captured"
NO_DESCRIPTION = "no VMDESCRIPTION: the stream ended before it (capture cut short, or migration failed)"


@dataclass(slots=True)
class KeptSection:
    section_id: int
    idstr: str | None
    instance_id: int | None
    version_id: int | None
    full: bool                     # a SECTION_FULL (what the VMDESCRIPTION describes)
    offset: int = 0
    size: int = 0
    body: bytearray | None = None  # None: not kept (bound, gap)
    why_not: str = ""


class DeviceStateKeeper:
    """Sans-IO: fed section starts, body bytes and the VMDESCRIPTION; returns the ``device.vmstate``
    records' (offset, length, fields)."""

    def __init__(self) -> None:
        self.sections: list[KeptSection] = []
        self.dropped = 0                      # sections past MAX_KEPT_SECTIONS (counted only)
        self.kept_bytes = 0
        self.current: KeptSection | None = None
        self._starts: dict[int, tuple[str | None, int | None, int | None]] = {}
        self.described = False
        self.postcopy = False                 # the device state was sent in a PACKAGED command
        self.description_lost = False         # a gap cut the VMDESCRIPTION

    def start(self, section_id: int, idstr: str | None, instance_id: int | None, version_id: int | None,
              full: bool, offset: int) -> None:
        """A device section's body starts at ``offset`` (START/FULL give the ids; PART/END reuse them)."""
        if instance_id is not None:
            self._starts[section_id] = (idstr, instance_id, version_id)
        elif section_id in self._starts:
            idstr, instance_id, version_id = self._starts[section_id]
        sec = KeptSection(section_id, idstr, instance_id, version_id, full, offset, body=bytearray())
        if len(self.sections) >= MAX_KEPT_SECTIONS:
            self.dropped += 1
            self.current = None
            return
        self.sections.append(sec)
        self.current = sec

    def add(self, offset: int, data: memoryview | bytes) -> None:
        """Bytes at stream ``offset`` of the current section (bytes already added are skipped)."""
        sec = self.current
        if sec is None or sec.body is None:
            return
        have = sec.offset + len(sec.body)
        if offset + len(data) <= have:
            return
        if offset > have:
            self.lost()
            return
        data = data[have - offset:]
        room = MAX_KEPT_BYTES - self.kept_bytes     # bytes past the footer come too: trimmed by done()
        if len(data) > room:
            data = data[:max(room, 0)]
            sec.why_not = f"not kept: device state above the {MAX_KEPT_BYTES}-byte bound per stream"
        sec.body += data
        self.kept_bytes += len(data)

    def done(self, length: int) -> None:
        """The current section's body is ``length`` bytes (what was added may run past its footer)."""
        sec = self.current
        if sec is None:
            return
        sec.size = length
        if sec.body is not None:
            if len(sec.body) < length:
                self.kept_bytes -= len(sec.body)
                sec.body = None
                sec.why_not = sec.why_not or "not kept: bytes of the section were not seen"
            else:
                sec.why_not = ""
                self.kept_bytes -= len(sec.body) - length
                del sec.body[length:]
        self.current = None

    def lost(self, description: bool = False) -> None:
        """A gap: the section being scanned (or the VMDESCRIPTION being read) lost bytes."""
        if description:
            self.description_lost = True
        if self.current is not None and self.current.body is not None:
            self.kept_bytes -= len(self.current.body)
            self.current.body = None
            self.current.why_not = "not kept: bytes of the section were not captured"

    def describe(self, data: bytes | None, length: int) -> list[Found]:
        """The VMDESCRIPTION arrived (``data`` None: its JSON was not kept): every kept section decoded."""
        self.described = True
        try:
            if data is None:
                raise DescriptionError(f"VMDESCRIPTION of {length} bytes is above the {MAX_DESCRIPTION}-byte bound")
            desc = parse_description(data)
        except DescriptionError as exc:
            return self._undecoded(f"VMDESCRIPTION unusable: {exc}")
        budget = Budget()
        out = []
        for sec in self.sections:
            fields = self._fields(sec)
            body = bytes(sec.body) if sec.body is not None else None
            dev = desc.devices.get((sec.idstr or "", sec.instance_id if sec.instance_id is not None else -1))
            if sec.body is None:
                fields["reason"] = sec.why_not
            elif dev is None or not sec.full:
                fields["reason"] = ("not described: QEMU describes only the device state of SECTION_FULL records"
                                    if dev is not None else "not in the VMDESCRIPTION")
            else:
                got = decode_device(body or b"", dev, budget)
                fields["decoded"] = True
                fields["vmsd_name"] = str(dev.get("vmsd_name", ""))
                fields["state"] = got.fields
                if got.problems:
                    fields["problems"] = got.problems
            out.append((sec.offset, sec.size, fields, body))
        out.extend(self._dropped_note())
        self._release()
        return out

    def finish(self) -> list[Found]:
        """The stream ended: without a description, every section with its size and why it is not decoded."""
        if self.described:
            return []
        self.described = True
        why = (NO_DESCRIPTION_GAP if self.description_lost else NO_DESCRIPTION_POSTCOPY if self.postcopy
               else NO_DESCRIPTION)
        return self._undecoded(why)

    def _undecoded(self, why: str) -> list[Found]:
        out = []
        for sec in self.sections:
            fields = self._fields(sec)
            fields["reason"] = sec.why_not or why
            out.append((sec.offset, sec.size, fields, bytes(sec.body) if sec.body is not None else None))
        out.extend(self._dropped_note())
        self._release()
        return out

    def _dropped_note(self) -> list[Found]:
        if not self.dropped:
            return []
        return [(0, 0, {"section_id": None, "idstr": None, "decoded": False,
                        "reason": f"{self.dropped} more device sections past the bound of {MAX_KEPT_SECTIONS} "
                                  "not listed"}, None)]

    def _release(self) -> None:
        self.sections = []
        self.kept_bytes = 0
        self.current = None

    @staticmethod
    def _fields(sec: KeptSection) -> dict[str, Any]:
        return {"section_id": sec.section_id, "idstr": sec.idstr, "instance_id": sec.instance_id,
                "version_id": sec.version_id, "decoded": False}
