# SPDX-License-Identifier: GPL-2.0-or-later
"""Main-channel parser (source -> destination): header, configuration, sections, commands, EOF.

The "ram" section is walked record by record. Other sections carry no length: their end is found by
scanning for the footer ``0x7e + be32 section_id`` followed by a plausible next record type.
A PACKAGED command's nested stream is parsed inline; its records carry ``fields["packaged"] = True``.
A recovered main channel (no QEVM, starts with commands) is accepted too.
"""

from __future__ import annotations

from typing import Any

from dissectors.channels import kinds as K
from dissectors.channels.cursor import Cursor, NeedMore
from dissectors.channels.device_state import DeviceStateKeeper, Found
from dissectors.channels.engine import State
from dissectors.channels.identify import looks_like_ram_record
from dissectors.channels.ram_walk import RamWalker
from dissectors.channels.record import Record
from dissectors.layers.derived import (
    MAX_CAPABILITIES,
    MAX_PACKAGED_SIZE,
    MIG_CMD_LENGTHS,
    MIG_CMD_PACKAGED,
    MIG_CMD_PING,
    MIG_CMD_POSTCOPY_ADVISE,
    MIG_CMD_POSTCOPY_RAM_DISCARD,
    MIG_CMD_RECV_BITMAP,
    MIG_CMDS,
    QEMU_VM_COMMAND,
    QEMU_VM_CONFIGURATION,
    QEMU_VM_EOF,
    QEMU_VM_FILE_MAGIC,
    QEMU_VM_FILE_VERSION,
    QEMU_VM_SECTION_END,
    QEMU_VM_SECTION_FOOTER,
    QEMU_VM_SECTION_FULL,
    QEMU_VM_SECTION_PART,
    QEMU_VM_SECTION_START,
    QEMU_VM_SUBSECTION,
    QEMU_VM_VMDESCRIPTION,
    RAM_SECTION_IDSTR,
)
from dissectors.layers.unpack import named
from dissectors.vmstate.description import MAX_DESCRIPTION

_HEADER = named("QemuFileHeader")
_CONFIG = named("Configuration", "type", "len")
_TYPE = named("Subsection", "type", "type")             # the record type byte that starts every record
_SUB_VERSION = named("Subsection", "version_id", "version_id")
_SEC_HEAD = named("SectionStart", "type", "section_id")
_SEC_TAIL = named("SectionStart", "instance_id", "version_id")
_PART = named("SectionPart")
_FOOTER = named("SectionFooter")
_VMDESC = named("VmDescription", "type", "len")
_CMD = named("Command")
_PING = named("CmdPing")
_ADVISE = named("CmdPostcopyAdvise")
_PACKAGED = named("CmdPackaged")
_DISCARD_VERSION = named("CmdRamDiscard", "version", "version")
_DISCARD_END = named("CmdRamDiscard", "terminator", "terminator")
_RANGE = named("DiscardRange")
_PAGE_BITS = named("ConfigTargetPageBits")
_CAP_COUNT = named("ConfigCapabilities", "count", "count")
_UUID = named("ConfigUuid")

_SECTION_KINDS = {k.code: k for k in (K.MAIN_SECTION_START, K.MAIN_SECTION_FULL, K.MAIN_SECTION_PART,
                                      K.MAIN_SECTION_END)}
#: Record types that may follow a section footer (what :meth:`MainParser._follows_footer` tests further).
AFTER_FOOTER = frozenset({QEMU_VM_EOF, QEMU_VM_SECTION_START, QEMU_VM_SECTION_PART, QEMU_VM_SECTION_END,
                          QEMU_VM_SECTION_FULL, QEMU_VM_COMMAND})
#: Bounds on length fields (anything above is reported malformed, never allocated).
MAX_VMDESC = 64 << 20
MAX_DEVICE_STATE = 64 << 20


def _command_problem(cmd: int, length: int) -> str | None:
    """Why a MIG_CMD header is not one QEMU sends, or None."""
    if cmd == 0 or cmd not in MIG_CMDS:
        return "unknown MIG_CMD"
    allowed = MIG_CMD_LENGTHS.get(cmd)
    if allowed is not None and length not in allowed:
        return "bad length for MIG_CMD"
    return None


def _text(b: bytes) -> str:
    return b.decode("latin-1")


class MainParser(RamWalker):
    """Main channel: emits main.*, ram.* and device.state records."""

    def __init__(self, page_size: int = 4096) -> None:
        super().__init__(page_size)
        self._sections: dict[int, str] = {}
        self._section_id = 0
        self._device_start = 0
        self._package_end: int | None = None
        self._recovered = False      # started without a QEVM header (postcopy recovery)
        self._held_ts: float | None = None   # when a footer candidate waiting for confirmation arrived
        self._fallback: tuple[int, float] | None = None   # first rejected candidate followed by EOF, its time
        self._keeper: DeviceStateKeeper | None = None
        self._vmdesc_json = bytearray()
        self._vmdesc_left = 0

    def keep_device_state(self) -> None:
        """Keep device sections (bounded, see ``device_state``) and the VMDESCRIPTION, and emit a
        ``device.vmstate`` record per device section when the description arrives (or the stream ends)."""
        self._keeper = DeviceStateKeeper()

    def _initial_state(self) -> State:
        return self._st_header

    def _after_eos(self) -> None:
        self._state = self._st_ram_footer

    def _emit_main(self, kind: str, offset: int, length: int, fields: dict[str, Any],
                   raw: bytes | None = None) -> None:
        if self._package_end is not None:
            fields["packaged"] = True
        self._emit(kind, offset, length, fields, raw)

    # -- header and configuration ---------------------------------------------------------------

    def _st_header(self, mv: memoryview, pos: int, end: int) -> int | None:
        if mv[pos] == QEMU_VM_COMMAND:  # recovered main channel: RECV_BITMAP commands, no header
            self._recovered = True
            self._state = self._st_record
            return pos
        head = Cursor(mv, pos, end).read(_HEADER)
        if head.magic != QEMU_VM_FILE_MAGIC or head.version != QEMU_VM_FILE_VERSION:
            self._malformed(self._base + pos, "not a QEVM v3 stream", magic=head.magic, version=head.version)
            return None
        self._emit(K.MAIN_HEADER, self._base + pos, _HEADER.size, head._asdict(), bytes(mv[pos:pos + _HEADER.size]))
        self._state = self._st_record
        return pos + _HEADER.size

    def _configuration(self, mv: memoryview, pos: int, end: int) -> int | None:
        c = Cursor(mv, pos, end)
        n = c.read(_CONFIG).len
        if n > 256:
            self._malformed(self._base + pos, "machine name longer than 256 bytes", len=n)
            return None
        name = _text(c.take(n))
        self._emit_main(K.MAIN_CONFIG, self._base + pos, c.pos - pos, {"machine": name}, c.raw_from(pos))
        return c.pos

    def _subsection(self, mv: memoryview, pos: int, end: int) -> int | None:
        """A configuration subsection at top level (device subsections live inside device bodies)."""
        c = Cursor(mv, pos, end)
        c.read(_TYPE)
        name = _text(c.counted())
        version = c.read(_SUB_VERSION).version_id
        fields: dict[str, Any] = {"name": name, "version_id": version}
        if name == "configuration/target-page-bits":
            fields["target_page_bits"] = c.read(_PAGE_BITS).target_page_bits
        elif name == "configuration/uuid":
            fields["uuid"] = c.read(_UUID).uuid.hex()
        elif name == "configuration/capabilities":
            count = c.read(_CAP_COUNT).count
            if count > MAX_CAPABILITIES:
                self._malformed(self._base + pos, "absurd capability count", count=count)
                return None
            fields["capabilities"] = [_text(c.counted()) for _ in range(count)]
            self.mapped_ram = "mapped-ram" in fields["capabilities"]
        else:
            self._malformed(self._base + pos, "unknown top-level subsection", name=name)
            return None
        p = c.pos
        self._emit_main(K.MAIN_SUBSECTION, self._base + pos, p - pos, fields, bytes(mv[pos:p]))
        return p

    # -- records --------------------------------------------------------------------------------

    def _st_record(self, mv: memoryview, pos: int, end: int) -> int | None:
        off = self._base + pos
        if self._package_end is not None and off >= self._package_end:
            if off > self._package_end:
                self._malformed(off, "record crosses the end of the PACKAGED stream")
                return None
            self._package_end = None
        typ = mv[pos]
        if typ in _SECTION_KINDS:
            return self._section(mv, pos, end, typ)
        if typ == QEMU_VM_COMMAND:
            return self._command(mv, pos, end)
        if typ == QEMU_VM_EOF:
            self._emit_main(K.MAIN_EOF, off, 1, {})
            self._state = self._st_after_eof
            return pos + 1
        if typ == QEMU_VM_VMDESCRIPTION:
            return self._vmdescription(mv, pos, end)
        if typ == QEMU_VM_CONFIGURATION:
            return self._configuration(mv, pos, end)
        if typ == QEMU_VM_SUBSECTION:
            return self._subsection(mv, pos, end)
        if typ == QEMU_VM_SECTION_FOOTER:
            sid = Cursor(mv, pos, end).read(_FOOTER).section_id
            self._emit_main(K.MAIN_FOOTER, off, _FOOTER.size, {"section_id": sid})
            return pos + _FOOTER.size
        self._malformed(off, "unknown main-channel record type", type=typ)
        return None

    def _section(self, mv: memoryview, pos: int, end: int, typ: int) -> int | None:
        off = self._base + pos
        c = Cursor(mv, pos, end)
        if typ in (QEMU_VM_SECTION_START, QEMU_VM_SECTION_FULL):
            sid = c.read(_SEC_HEAD).section_id
            idstr = _text(c.counted())
            tail = c.read(_SEC_TAIL)
            p = c.pos
            self._sections[sid] = idstr
            fields = {"section_id": sid, "idstr": idstr, "instance_id": tail.instance_id,
                      "version_id": tail.version_id}
        else:
            sid = c.read(_PART).section_id
            p = c.pos
            idstr = self._sections.get(sid)
            if idstr is None and self._recovered:
                # A recovered channel never saw the SECTION_START that named this id: the sections
                # that go on after a postcopy pause are iterable ones, so test for RAM records.
                ram = looks_like_ram_record(mv[p:end], allow_continue=True, page_size=self.page_size)
                if ram is None:
                    return None
                if ram:
                    idstr = self._sections[sid] = RAM_SECTION_IDSTR.decode()
            fields = {"section_id": sid, "idstr": idstr}
        self._emit_main(_SECTION_KINDS[typ], off, p - pos, fields, bytes(mv[pos:p]))
        self._section_id = sid
        if idstr is not None and idstr.encode("latin-1") == RAM_SECTION_IDSTR:
            self._state = self._st_ram
        else:
            self._device_start = self._base + p
            self._state = self._st_device
            if self._keeper is not None:
                self._keeper.start(sid, idstr, fields.get("instance_id"), fields.get("version_id"),
                                   typ == QEMU_VM_SECTION_FULL, self._device_start)
        return p

    def _st_ram_footer(self, mv: memoryview, pos: int, end: int) -> int | None:
        foot = Cursor(mv, pos, end).read(_FOOTER)
        if foot.type != QEMU_VM_SECTION_FOOTER or foot.section_id != self._section_id:
            self._malformed(self._base + pos, "missing RAM section footer", expected=self._section_id)
            return None
        self._emit_main(K.MAIN_FOOTER, self._base + pos, _FOOTER.size, {"section_id": foot.section_id})
        self._state = self._st_record
        return pos + _FOOTER.size

    def _footer_pattern(self) -> bytes:
        return _FOOTER.pack(QEMU_VM_SECTION_FOOTER, self._section_id)

    def _device_done(self, footer_off: int, ts: float | None = None, eof: bool = False) -> None:
        """The section ends at ``footer_off`` (followed by the stream's EOF if ``eof``); its records carry
        ``ts``, else the time the footer first arrived (it may have waited for the bytes that confirmed
        it), else the current feed's."""
        self._fallback = None
        held, self._held_ts = self._held_ts, None
        now = self._ts
        self._ts = ts if ts is not None else held if held is not None else now
        sid = self._section_id
        if self._keeper is not None:
            self._keeper.done(footer_off - self._device_start)
        self._emit_main(K.DEVICE_STATE, self._device_start, footer_off - self._device_start,
                        {"section_id": sid, "idstr": self._sections.get(sid)})
        self._emit_main(K.MAIN_FOOTER, footer_off, _FOOTER.size, {"section_id": sid})
        if eof:
            self._emit_main(K.MAIN_EOF, footer_off + _FOOTER.size, 1, {})
        self._ts = now
        self._state = self._st_after_eof if eof else self._st_record

    def _st_device(self, mv: memoryview, pos: int, end: int) -> int | None:
        if self._keeper is None:
            return self._scan_device(mv, pos, end)
        self._keeper.add(self._base + pos, mv[pos:end])    # trimmed to the body when its footer is found
        return self._scan_device(mv, pos, end)

    def _scan_device(self, mv: memoryview, pos: int, end: int) -> int | None:
        """Scan a device section's body for its footer. A candidate ``7e + section_id`` counts only when
        the bytes after it start a record that may follow a footer (:meth:`_follows_footer`); the body
        of a device (the timer's clock offsets, say) can hold the same five bytes. Until the bytes after
        a candidate tell, the scan waits on it (bounded: a record header)."""
        pat = self._footer_pattern()
        limit = end
        if self._package_end is not None:      # a section inside a PACKAGED stream ends inside it
            limit = max(pos, min(end, self._package_end - self._base))
        chunk = bytes(mv[pos:limit])
        i = chunk.find(pat)
        while i >= 0:
            verdict = self._follows_footer(mv, pos + i + _FOOTER.size, end)
            if verdict is None:
                if self._held_ts is None:
                    self._held_ts = self._ts
                return pos + i if i else None
            if verdict:
                self._device_done(self._base + pos + i)
                return pos + i + _FOOTER.size
            if self._fallback is None and mv[pos + i + _FOOTER.size] == QEMU_VM_EOF:
                self._fallback = (self._base + pos + i, self._ts)
            i = chunk.find(pat, i + 1)
        self._held_ts = None
        if limit < end:
            self._malformed(self._package_end, "section crosses the end of the PACKAGED stream",
                            section_id=self._section_id)
            return None
        keep = max(pos, end - (_FOOTER.size - 1))
        if self._base + keep - self._device_start > MAX_DEVICE_STATE:
            if not self._end_at_fallback():
                self._malformed(self._device_start, "no section footer found within the bound",
                                section_id=self._section_id, bound=MAX_DEVICE_STATE)
            return None
        return keep if keep > pos else None

    def _end_at_fallback(self) -> bool:
        """No footer was confirmed before the stream (or the scan bound) ended: take the first candidate
        that was followed by EOF as the end of the stream, and what came after it as trailing bytes."""
        if self._fallback is None:
            return False
        footer_off, ts = self._fallback
        self._device_done(footer_off, ts, eof=True)
        self._malformed(footer_off + _FOOTER.size + 1, "bytes after the end of the migration stream (EOF)")
        return True

    def _follows_footer(self, mv: memoryview, p: int, end: int) -> bool | None:
        """Whether the bytes at ``p`` start a record that can follow a section footer: a section part or
        end of a section the stream declared (RAM records after a RAM one), a section start or full
        section with a printable idstr, a known command of a valid length, or EOF at the stream's end
        (nothing after it but a VMDESCRIPTION). None: more bytes are needed to tell."""
        try:
            return self._record_may_follow(Cursor(mv, p, end))
        except NeedMore:
            return None

    def _record_may_follow(self, c: Cursor) -> bool:
        """:meth:`_follows_footer`'s test on the record at the cursor (NeedMore: cannot tell yet)."""
        typ = c.peek()[0]
        if typ not in AFTER_FOOTER:
            return False
        if typ == QEMU_VM_EOF:
            if self._package_end is not None:
                return False                  # a PACKAGED stream holds no EOF
            c.need(1)
            return self._vmdesc_follows(c)    # the stream's end (see _eof_hook) or a VMDESCRIPTION
        if typ in (QEMU_VM_SECTION_PART, QEMU_VM_SECTION_END):
            idstr = self._sections.get(c.read(_PART).section_id)
            if idstr is None:
                return False
            if idstr.encode("latin-1") != RAM_SECTION_IDSTR:
                return True
            ram = looks_like_ram_record(c.mv[c.pos:c.end], allow_continue=False, page_size=self.page_size)
            if ram is None:
                raise NeedMore
            return ram
        if typ in (QEMU_VM_SECTION_START, QEMU_VM_SECTION_FULL):
            sid = c.read(_SEC_HEAD).section_id
            if c.peek()[0] == 0:
                return False
            name = c.counted()
            c.read(_SEC_TAIL)
            if not all(0x20 <= ch < 0x7F for ch in name):
                return False
            known = self._sections.get(sid)
            return known is None or known == _text(name)
        if typ == QEMU_VM_COMMAND:
            cmd = c.read(_CMD)
            return _command_problem(cmd.cmd, cmd.len) is None
        return False

    @staticmethod
    def _vmdesc_follows(c: Cursor) -> bool:
        """After EOF only a VMDESCRIPTION may come: type, a sane length and the JSON's opening brace."""
        if c.peek()[0] != QEMU_VM_VMDESCRIPTION:
            return False
        n = c.read(_VMDESC).len
        return 0 < n <= MAX_VMDESC and c.peek()[0] == ord("{")

    def _vmdescription(self, mv: memoryview, pos: int, end: int) -> int | None:
        n = Cursor(mv, pos, end).read(_VMDESC).len
        if n > MAX_VMDESC:
            self._malformed(self._base + pos, "VMDESCRIPTION length is absurd", len=n)
            return None
        fields: dict[str, Any] = {"len": n}
        if self._package_end is not None:
            fields["packaged"] = True
        if self._keeper is not None:
            if n <= MAX_DESCRIPTION:          # kept for the device state, read across feeds
                self._hold(K.MAIN_VMDESC, self._base + pos, _VMDESC.size + n, fields)
                self._vmdesc_json = bytearray()
                self._vmdesc_left = n
                self._state = self._st_vmdesc_json
                return pos + _VMDESC.size
            self._emit_skipping(K.MAIN_VMDESC, self._base + pos, _VMDESC.size + n, fields, n)
            self._device_records(self._keeper.describe(None, n))
            self._state = self._st_trailing
            return pos + _VMDESC.size
        self._emit_skipping(K.MAIN_VMDESC, self._base + pos, _VMDESC.size + n, fields, n)
        self._state = self._st_trailing
        return pos + _VMDESC.size

    def _st_vmdesc_json(self, mv: memoryview, pos: int, end: int) -> int | None:
        """The VMDESCRIPTION's JSON, kept (bounded by ``MAX_DESCRIPTION``); then the device state decoded."""
        take = min(self._vmdesc_left, end - pos)
        self._vmdesc_json += mv[pos:pos + take]
        self._vmdesc_left -= take
        if self._vmdesc_left:
            return pos + take
        self._release()
        assert self._keeper is not None
        data, self._vmdesc_json = bytes(self._vmdesc_json), bytearray()
        self._device_records(self._keeper.describe(data, len(data)))
        self._state = self._st_trailing
        return pos + take

    def _device_records(self, found: list[Found]) -> None:
        for offset, length, fields, body in found:
            self._emit(K.DEVICE_VMSTATE, offset, length, fields, body)

    def gap(self, length: int, ts: float) -> list[Record]:
        if self._keeper is not None:
            self._keeper.lost(description=self._state == self._st_vmdesc_json)
        return super().gap(length, ts)

    def eof(self, ts: float) -> list[Record]:
        out = super().eof(ts)
        if self._keeper is not None:
            self._out = out
            self._device_records(self._keeper.finish())
        return out

    def _st_after_eof(self, mv: memoryview, pos: int, end: int) -> int | None:
        """After EOF the stream ends, or carries one VMDESCRIPTION and then ends."""
        if mv[pos] == QEMU_VM_VMDESCRIPTION:
            return self._vmdescription(mv, pos, end)
        return self._st_trailing(mv, pos, end)

    def _st_trailing(self, mv: memoryview, pos: int, end: int) -> int | None:
        self._malformed(self._base + pos, "bytes after the end of the migration stream (EOF)",
                        first=int(mv[pos]))
        return None

    def _eof_hook(self) -> bool:
        """The stream ended on a footer candidate: a footer (and EOF) that nothing after it contradicts."""
        if self._state != self._st_device:
            return False
        buf = bytes(self._buf)
        if not buf.startswith(self._footer_pattern()):
            return self._end_at_fallback()
        rest = buf[_FOOTER.size:]
        if rest not in (b"", bytes([QEMU_VM_EOF])) or (rest and self._package_end is not None):
            return self._end_at_fallback()
        self._device_done(self.offset - len(buf), eof=bool(rest))
        return True

    # -- commands -------------------------------------------------------------------------------

    def _command(self, mv: memoryview, pos: int, end: int) -> int | None:
        off = self._base + pos
        c = Cursor(mv, pos, end)
        head = c.read(_CMD)
        cmd, n = head.cmd, head.len
        problem = _command_problem(cmd, n)
        if problem is not None:
            self._malformed(off, problem, cmd=cmd if cmd == 0 or cmd not in MIG_CMDS else MIG_CMDS[cmd], len=n)
            return None
        body = Cursor(mv, c.need(n), c.pos)          # the command's data, all here
        stop = c.pos
        fields: dict[str, Any] = {"cmd": MIG_CMDS[cmd], "len": n}
        if cmd == MIG_CMD_PING:
            fields["value"] = body.read(_PING).value
        elif cmd == MIG_CMD_POSTCOPY_ADVISE and n:
            fields.update(body.read(_ADVISE)._asdict())
        elif cmd == MIG_CMD_RECV_BITMAP:
            block = body.counted_within()
            if block is None or body.pos != body.end:
                self._malformed(off, "RECV_BITMAP length does not match its idstr", len=n)
                return None
            fields["block"] = _text(block)
        elif cmd == MIG_CMD_POSTCOPY_RAM_DISCARD:
            if not self._discard(body, fields):
                self._malformed(off, "bad POSTCOPY_RAM_DISCARD payload", len=n)
                return None
        elif cmd == MIG_CMD_PACKAGED:
            size = body.read(_PACKAGED).length
            if size > MAX_PACKAGED_SIZE:
                self._malformed(off, "PACKAGED length above MAX_VM_CMD_PACKAGED_SIZE", length=size)
                return None
            fields["length"] = size
        self._emit_main(K.MAIN_CMD, off, stop - pos, fields, c.raw_from(pos))
        if self._keeper is not None and cmd == MIG_CMD_PACKAGED:
            self._keeper.postcopy = True       # the device state went in a PACKAGED blob: no VMDESCRIPTION
        if cmd == MIG_CMD_PACKAGED:
            self._package_end = self._base + stop + fields["length"]
        return stop

    @staticmethod
    def _discard(body: Cursor, fields: dict[str, Any]) -> bool:
        """A POSTCOPY_RAM_DISCARD's data (``CmdRamDiscard``): version 0, a block name, a zero byte, then
        whole (start, length) ranges up to the command's end."""
        try:
            version = body.read(_DISCARD_VERSION).version
            block = body.counted_within()
            terminator = body.read(_DISCARD_END).terminator
        except NeedMore:
            return False
        if version != 0 or block is None or terminator != 0 or (body.end - body.pos) % _RANGE.size:
            return False
        fields["version"] = version
        fields["block"] = _text(block)
        fields["ranges"] = [tuple(body.read(_RANGE)) for _ in range((body.end - body.pos) // _RANGE.size)]
        return True
