"""The report of a raw migration stream file (what ``migrate "exec:cat > FILE"`` or ``file:FILE`` writes).

A file holds the main channel alone: no TCP, so no connections, accept order or roles race to judge. What
there is to say: the machine, the sections and devices, the RAM carried, and whether the stream is whole
(it ends with QEMU_VM_EOF, and the VMDESCRIPTION after it where there is one) or cut short or malformed,
which are findings. Fed the main-channel parser's records (sans-IO); the CLI feeds the file.
"""

from __future__ import annotations

from typing import Any

from dissectors.channels import Record
from dissectors.channels import kinds as K

#: Device sections listed at most (the rest counted).
MAX_DEVICES = 512


class StreamFileSummary:
    """Folds the main channel's records into the stream-file report."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.machine: str | None = None
        self.capabilities: list[str] = []
        self.devices: list[dict[str, Any]] = []
        self.devices_total = 0
        self.device_bytes = 0
        self.ram_pages = 0
        self.zero_pages = 0
        self.ram_bytes = 0
        self.ram_total_pages = 0        # guest pages of the migrated RAM blocks (MEM_SIZE)
        self.mapped_pages = 0           # mapped-ram: pages written at fixed file offsets (the blocks' bitmaps)
        self.commands: dict[str, int] = {}
        self.eof_at: int | None = None
        self.vmdesc_bytes: int | None = None
        self.problems: list[dict[str, Any]] = []

    def on_records(self, direction: int, records: list[Record]) -> None:
        for rec in records:
            kind, f = rec.kind, rec.fields
            if kind == K.MAIN_HEADER:
                self.version = f.get("version")
            elif kind == K.MAIN_CONFIG:
                self.machine = f.get("machine")
            elif kind == K.MAIN_SUBSECTION and f.get("capabilities"):
                self.capabilities = list(f["capabilities"])
            elif kind in (K.MAIN_SECTION_FULL, K.MAIN_SECTION_START) and f.get("idstr") != "ram":
                self.devices_total += 1
                if len(self.devices) < MAX_DEVICES:
                    self.devices.append({"idstr": f.get("idstr"), "instance_id": f.get("instance_id"),
                                         "version_id": f.get("version_id"), "bytes": 0})
            elif kind == K.DEVICE_STATE:
                self.device_bytes += rec.length
                if self.devices and self.devices[-1]["idstr"] == f.get("idstr"):
                    self.devices[-1]["bytes"] += rec.length
            elif kind == K.RAM_MEM_SIZE:
                for block in f.get("blocks", ()):
                    self.ram_total_pages += block.get("used_length", 0) // 4096
                    if "pages_offset" in block:         # mapped-ram: the pages are in the file, not the stream
                        self.mapped_pages += block.get("pages", 0)
            elif kind == K.RAM_PAGE:
                self.ram_pages += 1
                self.ram_bytes += rec.length
            elif kind == K.RAM_ZERO:
                self.zero_pages += f.get("pages", 1)
                self.ram_bytes += rec.length
            elif kind == K.MAIN_CMD:
                name = str(f.get("cmd"))
                self.commands[name] = self.commands.get(name, 0) + 1
            elif kind == K.MAIN_EOF:
                self.eof_at = rec.offset
            elif kind == K.MAIN_VMDESC:
                self.vmdesc_bytes = rec.length
            elif kind in (K.MALFORMED, K.TRUNCATED) and len(self.problems) < 16:
                self.problems.append({"kind": str(kind), "offset": rec.offset,
                                      "reason": str(f.get("reason") or f.get("expected") or f.get("state") or "")})

    def report(self, capture: dict[str, Any]) -> dict[str, Any]:
        findings = []
        if self.problems:
            p = self.problems[0]
            if p["kind"] == K.TRUNCATED:
                findings.append(f"cut short inside a record ({p['reason']}) starting at offset {p['offset']}, "
                                f"before QEMU_VM_EOF (the file holds {capture['bytes']} bytes)")
            else:
                findings.append(f"malformed at offset {p['offset']}: {p['reason']}")
        elif self.eof_at is None:
            findings.append(f"the stream ends at offset {capture['bytes']} before QEMU_VM_EOF: cut short")
        stops = [w for w in capture.get("warnings", ()) if w.endswith("; stopped reading")]
        if stops:       # not a warning that lost nothing (trailing garbage after the gzip data, ignored)
            findings.append(stops[0])
        status = "complete" if not findings else "incomplete"
        stream = {
            "status": status,
            "version": self.version,
            "machine": self.machine,
            "capabilities": self.capabilities,
            "bytes": capture["bytes"],
            "eof_offset": self.eof_at,
            "vmdescription_bytes": self.vmdesc_bytes,
            "ram": {"pages": self.ram_pages + self.mapped_pages, "zero_pages": self.zero_pages,
                    "bytes": self.ram_bytes, "guest_pages": self.ram_total_pages,
                    "mapped_ram": "mapped-ram" in self.capabilities},
            "devices": self.devices,
            "device_sections": self.devices_total,
            "device_bytes": self.device_bytes,
            "commands": dict(sorted(self.commands.items())),
            "problems": self.problems,
            "findings": findings,
        }
        return {"capture": capture, "stream_file": stream, "migrations": [], "findings": len(findings)}
