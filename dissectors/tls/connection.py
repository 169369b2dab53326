"""One TLS connection, sans-IO: fed each direction's ciphertext, returns plaintext and problems.

Direction 0 is the client's. The ClientHello gives the client random (which selects the secrets in the
key log), the ServerHello the cipher suite and version. In TLS 1.3 everything after the ServerHello is
protected: first with the handshake traffic secrets, then, after each side's Finished, with
``*_TRAFFIC_SECRET_0`` (and a new secret after every KeyUpdate). Records may be split across feeds;
ChangeCipherSpec records (middlebox compatibility) are skipped.

TLS 1.2 (AEAD suites, ``tls12.py``): the handshake is in the clear up to each side's ChangeCipherSpec;
from there that side's records (its Finished first) are protected with the keys of the key block that the
``CLIENT_RANDOM`` line's master secret and the two hellos' randoms give.

Records nobody reads: the consumer may say how far its stream's plaintext holds nothing it needs
(``_Direction.wanted``, from a StreamSink's skip window: page contents). An application-data record whose
whole plaintext lies before that is framed, not decrypted: TLS 1.2 gives its plaintext length by its
record length; TLS 1.3 hides its content type and padding at its end, read from the cipher's keystream
(``TrafficKeys.tail``) for the record's last ``TAIL_LEN`` encrypted bytes. Such a record is *not
authenticated* (its tag is not checked): damage inside page contents goes unnoticed, as it does in a plain
capture. Every other record is decrypted and authenticated. The caller passes each chunk's stream offset
(``feed(..., offset)``) and delivers from ``want(direction)`` on: the bytes in between need not come.
"""

from __future__ import annotations

from dataclasses import dataclass

from dissectors.layers.derived import (
    TLS_ALERT,
    TLS_APPLICATION_DATA,
    TLS_CHANGE_CIPHER_SPEC,
    TLS_CLIENT_HELLO,
    TLS_EXT_SUPPORTED_VERSIONS,
    TLS_FINISHED,
    TLS_HANDSHAKE,
    TLS_KEY_UPDATE,
    TLS_MAX_RECORD,
    TLS_SERVER_HELLO,
    TLS_VERSIONS,
)
from dissectors.layers.unpack import counted_at, named, wire_size
from dissectors.tls.keylog import KeyLog
from dissectors.tls.schedule import SUITES, TAG_LEN, Suite, TrafficKeys, inner_content
from dissectors.tls.tls12 import MASTER_SECRET_LEN, SUITES12, RecordKeys12, Suite12, direction_keys, not_decrypted_why

_REC = named("TlsRecordHeader")
_HS_TYPE = named("TlsHandshakeStart", "msg_type", "msg_type")
_HS_SIZE = wire_size("TlsHandshakeStart")
_HELLO = named("TlsHelloStart")
_SH_TAIL = named("TlsServerHelloRest", "cipher_suite", "extensions_len")
_EXT = named("TlsExtension", "type", "len")
TLS13 = 0x0304
TLS12 = 0x0303
TLS12_SECRET = "CLIENT_RANDOM"
#: Ciphertext buffered per direction before the keys are known (a ClientHello's flight and more).
MAX_PENDING = 1 << 20

HANDSHAKE_SECRETS = ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET")
TRAFFIC_SECRETS = ("CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0")
#: Application-data records at least this long are framed, not decrypted, when nobody reads their plaintext
#: (shorter ones are cheap to decrypt, and post-handshake messages are short).
SKIP_MIN = 512
_REC_FIELDS = _REC.struct          # (content_type, version, len): the hot loop's unpacking
#: Skipped records whose length is checked in one batch at most (their last bytes are kept till then).
MAX_UNSURE = 256


@dataclass(frozen=True)
class Plaintext:
    direction: int
    data: bytes | memoryview
    offset: int = 0         # plaintext stream offset of ``data`` (records skipped before it counted)


@dataclass(frozen=True)
class TlsProblem:
    direction: int
    offset: int             # ciphertext stream offset of the record concerned
    why: str


@dataclass(frozen=True)
class HandshakeDone:
    """The client's Finished was read: from here the server has completed the handshake (the moment
    QEMU's destination hands the channel on to be given a role)."""

    direction: int = 0


Event = Plaintext | TlsProblem | HandshakeDone


def _handshake_types(content: bytes) -> list[int]:
    """Types of the handshake messages in one record's content (a message split across records counts
    where it starts)."""
    out = []
    p = 0
    while len(content) - p >= _HS_SIZE:
        out.append(content[p])
        p += _HS_SIZE + int.from_bytes(content[p + 1:p + _HS_SIZE], "big")
    return out


class _Direction:
    __slots__ = ("buf", "offset", "keys", "next_keys", "broken", "records", "need", "protected", "plain", "wanted",
                 "tail", "unsure", "paused", "skipped12")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.offset = 0            # ciphertext offset of buf[0]
        self.keys: TrafficKeys | RecordKeys12 | None = None
        # TLS 1.3: the application keys, taken after Finished; TLS 1.2: the keys, taken at ChangeCipherSpec
        self.next_keys: TrafficKeys | RecordKeys12 | None = None
        self.protected = False     # TLS 1.2: this side sent its ChangeCipherSpec
        self.broken = False
        self.records = 0
        self.need = 0              # buffered bytes the record being completed needs: nothing to do below it
        self.plain = 0             # plaintext offset (handed out and skipped)
        self.wanted = 0            # plaintext before this offset is not needed (the consumer's skip window)
        #: A record being skipped, its end awaited (TLS 1.3): (its offset, its length, its keys, its sequence)
        self.tail: tuple[int, int, TrafficKeys, int] | None = None
        #: Skipped records counted as unpadded application data, to be checked (``_settle``) before any
        #: plaintext after them is handed out: (offset, number, keys, sequence, content length, last bytes)
        self.unsure: list[tuple[int, int, TrafficKeys, int, int, bytes]] = []
        self.paused = False        # stopped after a plaintext, for the consumer to say its window (``resume``)
        #: TLS 1.2: the record skipped last, while no header after it was read: (its offset, its plaintext)
        self.skipped12: tuple[int, int] | None = None


class TlsConnection:
    """Decrypts one connection's two directions; ``feed`` returns events in stream order."""

    def __init__(self, keylog: KeyLog) -> None:
        self.keylog = keylog
        self.client_random: bytes | None = None
        self.version: int | None = None
        self.suite: Suite | Suite12 | None = None
        self.server_random: bytes | None = None
        self.secrets: dict[str, bytes] = {}
        self.dirs = (_Direction(), _Direction())
        self._ready = False                     # both hellos read (``_hellos_seen``, which stays true)
        #: The consumer may open windows (``_Direction.wanted``): each plaintext pauses the direction until
        #: ``resume``, so the window it opens applies to the records right after it.
        self.windows = False
        #: Records wholly inside a window are framed, not decrypted (False: every record is authenticated).
        self.skip_unread = True
        self.alerts: list[tuple[int, int, int]] = []   # (direction, level, description) seen decrypted

    @property
    def decrypted(self) -> list[int]:
        """Plaintext bytes per direction so far (handed out, or framed in records nobody reads)."""
        return [d.plain for d in self.dirs]

    @property
    def keys_known(self) -> bool:
        return bool(self.secrets)

    def feed(self, direction: int, data: bytes | memoryview, offset: int | None = None) -> list[Event]:
        """Take ciphertext of one direction (at stream ``offset``, if the caller skips what ``want`` says is
        not needed); events of both (the ServerHello may release records of the client that waited for
        it)."""
        d = self.dirs[direction]
        if offset is not None:
            have = d.offset + len(d.buf)
            if offset != have:
                if offset > have:           # not delivered, yet needed
                    return [] if d.broken else self.gap(direction, have)
                if offset + len(data) <= have:
                    return []
                data = data[have - offset:]     # bytes before the end of a skipped stretch
        if d.tail is not None and not d.buf and len(d.unsure) < MAX_UNSURE - 1 and len(data) >= d.need + 5 \
                and d.tail[2].counter_mode:
            data = self._skipping(d, data)  # the usual chunk while skipping: read from it, nothing buffered
            if data is None:
                return []
        d.buf += data
        if len(d.buf) < d.need:             # inside a record: most segments of a 16 KiB record end here
            return []
        out: list[Event] = []
        if self._ready:
            self._drain(direction, out)
            return out
        self._drain(direction, out)
        if self._hellos_seen:
            self._ready = True
            if self.dirs[1 - direction].buf:
                self._drain(1 - direction, out)
        return out

    @property
    def _hellos_seen(self) -> bool:
        """Both hellos were read (or the server's says a version that is not decrypted)."""
        return self.version is not None and (self.client_random is not None or self.suite is None)

    def _skipping(self, d: _Direction, data: bytes | memoryview) -> bytes | memoryview | None:
        """The hot path of skipping, from a chunk holding the end of the record being skipped and the next
        record's header: what ``_drain`` does for them, without buffering; returns the rest of the chunk
        to buffer as usual, or None if the next record is skipped too (over the rest)."""
        keep = d.need
        start, length, keys, seq = d.tail       # type: ignore[misc]
        content = length - TAG_LEN
        d.unsure.append((start, d.records, keys, seq, content, bytes(data[:keep - TAG_LEN])))
        d.plain += content - 1
        d.offset += keep
        d.tail = None
        d.need = 0
        ctype, version, length = _REC_FIELDS.unpack_from(data, keep)
        if ctype != TLS_APPLICATION_DATA or length < SKIP_MIN or d.plain + length > d.wanted \
                or d.next_keys is not None or d.keys is not keys or length > TLS_MAX_RECORD + 2048 \
                or version >> 8 != 3:
            return memoryview(data)[keep:]     # anything else: the general path
        seq = keys.seq
        keys.seq = seq + 1
        d.records += 1
        d.tail = (d.offset, length, keys, seq)
        d.need = tail = keys.skip_tail
        n = 5 + length - tail                   # bytes of the record not read
        if keep + n >= len(data):
            d.offset += n
            return None
        d.offset += n
        return memoryview(data)[keep + n:]

    def want(self, direction: int) -> int:
        """The ciphertext offset of the next byte this direction needs (the bytes before it may be left out)."""
        d = self.dirs[direction]
        return d.offset + len(d.buf)

    def _drain(self, direction: int, out: list[Event]) -> None:
        d = self.dirs[direction]
        buf = d.buf
        while not d.broken:
            if d.tail is not None:                  # the end of a record being skipped (TLS 1.3)
                keep = d.need
                if len(buf) < keep:
                    break
                start, length, keys, seq = d.tail
                d.tail = None
                d.need = 0
                content = length - TAG_LEN          # encrypted content (inner plaintext) of the record
                if keys.counter_mode:               # counted as unpadded, checked in bulk (``_settle``)
                    d.unsure.append((start, d.records, keys, seq, content, bytes(buf[:keep - TAG_LEN])))
                    d.plain += content - 1
                    if len(d.unsure) >= MAX_UNSURE:
                        self._settle(direction, out)
                        if d.broken:
                            break
                else:
                    at = length - keep              # where the bytes read start in the encrypted content
                    inner = keys.tail(seq, bytes(buf[:keep - TAG_LEN]), at)
                    if not self._padded_tail(direction, out, start, at, inner, d.records):
                        break
                del buf[:keep]
                d.offset += keep
                continue
            if len(buf) < 5:
                break
            ctype, version, length = _REC_FIELDS.unpack_from(buf)
            if length > TLS_MAX_RECORD + 2048 or version >> 8 != 3:
                self._break(direction, out, "not a TLS record header: the stream is not TLS from here")
                break
            total = 5 + length
            d.skipped12 = None                      # (a header after it: the record skipped last is whole)
            if self.skip_unread and ctype == TLS_APPLICATION_DATA and length >= SKIP_MIN \
                    and d.plain + length <= d.wanted \
                    and d.next_keys is None and d.keys is not None and d.keys.skip_tail is not None \
                    and (d.protected or self.version != TLS12):
                # Nobody reads this record's plaintext: count its sequence number, drop what is buffered of
                # it and skip the rest, but for its last bytes (TLS 1.3) that say its content's length.
                keys = d.keys
                keys.seq += 1
                d.records += 1
                keep = d.need = keys.skip_tail
                if keep:
                    d.tail = (d.offset, length, keys, keys.seq - 1)     # type: ignore[assignment]
                else:
                    size = max(0, length - keys.suite.overhead)     # type: ignore[union-attr]
                    d.plain += size
                    d.skipped12 = (d.offset, size)
                n = total - keep
                if n >= len(buf):
                    buf.clear()
                else:
                    del buf[:n]
                d.offset += n
                continue
            if len(buf) < total:
                d.need = total
                if len(buf) > MAX_PENDING:
                    self._break(direction, out, "record larger than the buffer bound")
                break
            if ctype in (TLS_APPLICATION_DATA, TLS_CHANGE_CIPHER_SPEC) and not self._hellos_seen:
                if len(buf) > MAX_PENDING:    # protected, and a hello not seen yet: wait, boundedly
                    self._break(direction, out, "protected records before both hellos: the keys are unknown")
                break
            d.need = 0
            with memoryview(buf) as view:   # one copy (a slice of the bytearray would be a second)
                record = bytes(view[:total])
            offset = d.offset
            del buf[:total]
            d.offset += total
            d.records += 1
            self._record(direction, offset, ctype, record, out)
            if d.paused:
                break

    def resume(self, direction: int) -> list[Event]:
        """Go on after a plaintext (``_Direction.paused``: the consumer took it and may have opened a window)."""
        out: list[Event] = []
        self.dirs[direction].paused = False
        self._drain(direction, out)
        return out

    def _padded_tail(self, direction: int, out: list[Event], start: int, at: int, inner: bytes, number: int) -> bool:
        """A skipped record's last bytes (``inner``, from ``at`` of its content): its plaintext length from
        its content type's place, or the direction stops (False) if they do not show it."""
        d = self.dirs[direction]
        end = len(inner.rstrip(b"\0"))
        if not end:
            self._break(direction, out, f"record {number}, whose content was not decrypted (the analysis does "
                        f"not read it), has over {len(inner) - 1} bytes of padding: its length is unknown", start)
            return False
        if inner[end - 1] != TLS_APPLICATION_DATA:
            self._break(direction, out, f"record {number}, whose content was not decrypted (the analysis does "
                        f"not read it), is not application data (inner content type {inner[end - 1]})", start)
            return False
        d.plain += at + end - 1
        return True

    def _settle(self, direction: int, out: list[Event]) -> None:
        """Check the skipped records counted as unpadded application data (one keystream call per key):
        correct the plaintext offset for any padded one, stop the direction at one that is not
        application data. Runs before plaintext after them is handed out, and at the end."""
        d = self.dirs[direction]
        unsure, d.unsure = d.unsure, []
        d.plain -= sum(content - 1 for _, _, _, _, content, _ in unsure)
        i = 0
        while i < len(unsure):
            keys = unsure[i][2]
            j = i + 1
            while j < len(unsure) and unsure[j][2] is keys:
                j += 1
            lasts = keys.last_bytes([(seq, content, tail[-1]) for _, _, _, seq, content, tail in unsure[i:j]])
            for (start, number, _, seq, content, tail), last in zip(unsure[i:j], lasts, strict=True):
                if last == TLS_APPLICATION_DATA:
                    d.plain += content - 1
                    continue
                at = content - len(tail)
                if not self._padded_tail(direction, out, start, at, keys.tail(seq, tail, at), number):
                    return
            i = j

    def _cut(self, d: _Direction, at: int) -> int | None:
        """The stream stops at ``at`` (its end, or a gap) inside the TLS 1.2 record skipped last: that
        record was not whole after all; its offset."""
        if d.skipped12 is None or at >= d.offset:
            return None
        start, size = d.skipped12
        d.skipped12 = None
        d.plain -= size
        return start

    def finish(self, direction: int, end: int | None = None) -> list[Event]:
        """The direction ended (at ciphertext offset ``end``, if known): say why records still buffered
        were never decrypted."""
        out: list[Event] = []
        d = self.dirs[direction]
        if d.unsure:
            self._settle(direction, out)
        cut = self._cut(d, end) if end is not None and not d.broken else None
        if cut is not None:
            self._break(direction, out, "the stream ends inside a record", cut)
        elif d.tail is not None and not d.broken:
            self._break(direction, out, "the stream ends inside a record", d.tail[0])
        elif d.buf and not d.broken:
            why = ("the stream ends inside a record" if len(d.buf) < _REC.size
                   or len(d.buf) < _REC.size + _REC.unpack_from(d.buf).len
                   else "protected records before both hellos: the keys are unknown")
            self._break(direction, out, why)
        return out

    def gap(self, direction: int, offset: int) -> list[Event]:
        """Bytes of this direction were never captured: its records cannot be framed or decrypted past it."""
        out: list[Event] = []
        if not self.dirs[direction].broken:
            self._cut(self.dirs[direction], offset)
            self._break(direction, out, "bytes missing from the capture: nothing after them can be decrypted",
                        offset)
        return out

    # -- records --------------------------------------------------------------------------------------
    def _record(self, direction: int, offset: int, ctype: int, record: bytes, out: list[Event]) -> None:
        if self.version == TLS12:
            self._record12(direction, offset, ctype, record, out)
            return
        d = self.dirs[direction]
        body = record[_REC.size:]
        if ctype == TLS_CHANGE_CIPHER_SPEC:
            return
        if ctype == TLS_HANDSHAKE and d.keys is None:
            self._plain_handshake(direction, offset, body, out)
            return
        if ctype == TLS_ALERT and d.keys is None:
            if len(body) >= 2:
                self.alerts.append((direction, body[0], body[1]))
            return
        if ctype != TLS_APPLICATION_DATA:
            self._break(direction, out, f"unexpected record type {ctype} after the keys changed", offset)
            return
        if d.keys is None and d.next_keys is None:
            self._break(direction, out, self._why_no_keys(), offset)
            return
        header, sealed = record[:_REC.size], memoryview(record)[_REC.size:]     # no copy of the ciphertext
        inner = d.keys.decrypt(header, sealed) if d.keys is not None else None
        if inner is None and d.keys is None:
            # No handshake secret: the handshake's protected records cannot be read; the application
            # keys start with the first record they open.
            assert d.next_keys is not None
            inner = d.next_keys.decrypt(header, sealed)
            if inner is None:
                return
            d.keys, d.next_keys = d.next_keys, None
        elif inner is None and d.next_keys is not None:
            # Finished was not seen (no handshake secrets): the application keys may have started here.
            inner = d.next_keys.decrypt(header, sealed)
            if inner is not None:
                d.keys, d.next_keys = d.next_keys, None
        if inner is None:
            self._break(direction, out, f"record {d.records} failed authentication with the key log's secrets",
                        offset)
            return
        split = inner_content(inner)
        if split is None:
            return
        itype, content = split
        if itype == TLS_APPLICATION_DATA:
            if content:
                self._plaintext(direction, content, out)
        elif itype == TLS_HANDSHAKE:
            types = _handshake_types(content)
            if TLS_FINISHED in types and d.next_keys is not None:
                d.keys, d.next_keys = d.next_keys, None
                if direction == 0:
                    out.append(HandshakeDone())
            elif TLS_KEY_UPDATE in types and d.next_keys is None:
                d.keys = d.keys.updated()
        elif itype == TLS_ALERT and len(content) >= 2:
            self.alerts.append((direction, content[0], content[1]))

    def _plaintext(self, direction: int, content: bytes, out: list[Event]) -> None:
        """Hand out a record's application data (the skipped records before it settled first)."""
        d = self.dirs[direction]
        if d.unsure:
            self._settle(direction, out)
            if d.broken:
                return
        out.append(Plaintext(direction, content, d.plain))
        d.plain += len(content)
        d.paused = self.windows     # a consumer with windows: let it say the next one first

    def _record12(self, direction: int, offset: int, ctype: int, record: bytes, out: list[Event]) -> None:
        d = self.dirs[direction]
        body = record[_REC.size:]
        if ctype == TLS_CHANGE_CIPHER_SPEC:
            d.protected = True
            if d.next_keys is not None:
                d.keys, d.next_keys = d.next_keys, None
            return
        if not d.protected:
            if ctype == TLS_HANDSHAKE:
                self._plain_handshake(direction, offset, body, out)
            elif ctype == TLS_ALERT and len(body) >= 2:
                self.alerts.append((direction, body[0], body[1]))
            elif ctype == TLS_APPLICATION_DATA:
                self._break(direction, out, "application data before ChangeCipherSpec", offset)
            return
        if d.keys is None:
            self._break(direction, out, self._why_no_keys(), offset)
            return
        content = d.keys.decrypt(record[:_REC.size], memoryview(record)[_REC.size:])
        if content is None:
            self._break(direction, out, f"record {d.records} failed authentication with the key log's secrets",
                        offset)
            return
        if ctype == TLS_APPLICATION_DATA:
            if content:
                self._plaintext(direction, content, out)
        elif ctype == TLS_HANDSHAKE:
            if direction == 0 and TLS_FINISHED in _handshake_types(content):
                out.append(HandshakeDone())
        elif ctype == TLS_ALERT and len(content) >= 2:
            self.alerts.append((direction, content[0], content[1]))
        else:
            self._break(direction, out, f"unexpected record type {ctype} after ChangeCipherSpec", offset)

    def _plain_handshake(self, direction: int, offset: int, body: bytes, out: list[Event]) -> None:
        if len(body) < _HS_SIZE + _HELLO.size:
            return
        msg_type = _HS_TYPE.unpack_from(body).msg_type
        hello = _HELLO.unpack_from(body, _HS_SIZE)
        if msg_type == TLS_CLIENT_HELLO and direction == 0 and self.client_random is None:
            self.client_random = hello.random
            self.secrets = dict(self.keylog.for_random(hello.random))
            self._install_keys()
        elif msg_type == TLS_SERVER_HELLO and direction == 1 and self.version is None:
            self.server_random = hello.random
            self._server_hello(offset, body, hello.legacy_version, out)

    def _server_hello(self, offset: int, body: bytes, legacy_version: int, out: list[Event]) -> None:
        p = _HS_SIZE + _HELLO.size
        got = counted_at(body, p, len(body))
        if got is None or len(body) - got[1] < _SH_TAIL.size:
            self._break(1, out, "ServerHello too short", offset)
            return
        p = got[1]
        tail = _SH_TAIL.unpack_from(body, p)
        p += _SH_TAIL.size
        version = legacy_version
        end = min(len(body), p + tail.extensions_len)
        while end - p >= _EXT.size:
            ext = _EXT.unpack_from(body, p)
            data = body[p + _EXT.size:p + _EXT.size + ext.len]
            if ext.type == TLS_EXT_SUPPORTED_VERSIONS and len(data) == 2:
                version = int.from_bytes(data, "big")
            p += _EXT.size + ext.len
        self.version = version
        if version == TLS12:
            suite12 = SUITES12.get(tail.cipher_suite)
            if suite12 is None:
                for direction in (0, 1):
                    self._break(direction, out, not_decrypted_why(tail.cipher_suite), offset)
                return
            self.suite = suite12
            self._install_keys()
            return
        if version != TLS13:
            for direction in (0, 1):
                self._break(direction, out, f"{TLS_VERSIONS.get(version, hex(version))} is not decrypted "
                            "(TLS 1.2 and 1.3 only)", offset)
            return
        suite = SUITES.get(tail.cipher_suite)
        if suite is None:
            for direction in (0, 1):
                self._break(direction, out, f"unknown TLS 1.3 cipher suite 0x{tail.cipher_suite:04x}", offset)
            return
        self.suite = suite
        self._install_keys()

    def _install_keys(self) -> None:
        """Once the suite and the secrets are both known (the hellos may be seen in either order)."""
        suite = self.suite
        if suite is None or not self.secrets:
            return                     # a missing secret is reported when the first protected record comes
        if isinstance(suite, Suite12):
            master = self.secrets.get(TLS12_SECRET)
            if master is None or len(master) != MASTER_SECRET_LEN or self.client_random is None \
                    or self.server_random is None:
                return
            for d, keys in zip(self.dirs, direction_keys(suite, master, self.client_random, self.server_random),
                               strict=True):
                if d.protected and d.keys is None:
                    d.keys = keys
                else:
                    d.next_keys = keys
            return
        for direction in (0, 1):
            d = self.dirs[direction]
            hs = self.secrets.get(HANDSHAKE_SECRETS[direction])
            app = self.secrets.get(TRAFFIC_SECRETS[direction])
            if hs is not None:
                d.keys = TrafficKeys(suite, hs)
                d.next_keys = TrafficKeys(suite, app) if app is not None else None
            elif app is not None:
                d.next_keys = TrafficKeys(suite, app)    # the handshake's records are skipped
            # a direction's records still buffered (waiting for the suite) are processed by the next feed

    def _why_no_keys(self) -> str:
        if self.client_random is None:
            return "no ClientHello seen (the capture starts after it): the key log cannot be matched"
        if not self.secrets:
            return f"the key log has no secrets for client random {self.client_random.hex()[:16]}..."
        if self.version == TLS12:
            master = self.secrets.get(TLS12_SECRET)
            if master is None:
                return (f"the key log has no {TLS12_SECRET} line (the TLS 1.2 master secret) for client random "
                        f"{self.client_random.hex()[:16]}...")
            if len(master) != MASTER_SECRET_LEN:
                return (f"the key log's {TLS12_SECRET} secret is {len(master)} bytes, not a {MASTER_SECRET_LEN}-byte "
                        "master secret")
        return "the key log lacks this direction's traffic secret"

    def _break(self, direction: int, out: list[Event], why: str, offset: int | None = None) -> None:
        d = self.dirs[direction]
        if d.unsure:                # the records skipped before this point first (one may stop it sooner)
            self._settle(direction, out)
        if d.broken:
            return
        d.broken = True
        d.buf.clear()
        out.append(TlsProblem(direction, d.offset if offset is None else offset, why))
