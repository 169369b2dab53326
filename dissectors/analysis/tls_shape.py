"""What the TLS record layer shows of a channel whose contents are hidden (no key log).

Only the record headers are readable: each record's outer type, length and time. In TLS 1.3 every
protected record is typed ``application_data`` and carries one byte of inner content type and a 16-byte
AEAD tag around its plaintext, so a record's length less 17 is the size of what the peer wrote in one go
(GnuTLS, which QEMU uses, adds no padding). The client's Finished is the first protected record of the size
a Finished has under one of the suites (verify data of the hash's size plus the handshake header); what the
client writes after it is application data. The server's protected records after the client's Finished
are its application data (its return path on a main channel; a session ticket would count too).

TLS 1.2 differs: each side's Finished is the first record after its ChangeCipherSpec, typed ``handshake``
and protected (12 bytes of verify data plus the handshake header, so 16 bytes of plaintext); there is no
inner content type, and the suite's own overhead goes around every record: AES-GCM an 8-byte explicit nonce
and a 16-byte tag, ChaCha20-Poly1305 a 16-byte tag. The client's Finished's length less 16 is therefore
that overhead, and taken off every later record of the connection (under a CBC suite the padding makes the
sizes approximate). Alerts after ChangeCipherSpec are protected but keep their outer type: one a side sends
after its own application data is, most likely, the close_notify QEMU sends before closing (10.0+); in
TLS 1.3 it would be hidden as application data.

A recovered main channel (postcopy recovery, ``migrate-recover``) opens with the source's RECV_BITMAP
command, one write: the command header and a counted RAM block name; the destination answers at once with
its RECV_BITMAP return-path message, one write: the message header and the same counted name (then the
bitmap). A channel whose first two application records, the source's and then the destination's, differ
in size by exactly the difference of those two headers is, most likely, a recovered main channel
(:meth:`TlsShape.looks_recovery`; a new main channel's first writes are a header and configuration
section one way, a PONG the other).

QEMU writes a multifd channel's 64-byte hello with one write right after the handshake, so a channel
whose first application record holds exactly that many bytes is, most likely, a multifd channel. A main
channel's first write (header and configuration section) and a preempt channel's (a page) are of other
sizes. These are inferences, said as such in the report: ``--keylog`` reads the contents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dissectors.channels import Record
from dissectors.layers.unpack import named, wire_size
from dissectors.tls.schedule import SUITES, TAG_LEN

OVERHEAD = 1 + TAG_LEN                                     # inner content type + AEAD tag
FINISHED_PLAINTEXT = {wire_size("TlsHandshakeStart") + s.digest_size for s in SUITES.values()}
#: TLS 1.2's Finished: the handshake header and 12 bytes of verify data (RFC 5246 section 7.4.9).
FINISHED12_PLAINTEXT = wire_size("TlsHandshakeStart") + 12
#: A TLS 1.2 Finished record is at most this long under any suite (CBC with SHA-384 and an explicit IV: 96);
#: longer handshake records after ChangeCipherSpec are something else (a TLS 1.3 HelloRetryRequest's second
#: ClientHello follows a middlebox-compatibility ChangeCipherSpec).
FINISHED12_MAX_RECORD = 128
MULTIFD_HELLO_SIZE = named("MultifdHello").size
#: The return path's SHUT message: its header and its 4-byte status.
RP_SHUT_SIZE = wire_size("RpMessage") + wire_size("RpShut")
#: Headers around the counted block name of the RECV_BITMAP command (source) and return-path message
#: (destination) that open a recovered main channel; the name is 1 to 255 bytes after its length byte.
COMMAND_HEADER = wire_size("Command")
RP_HEADER = wire_size("RpMessage")
COUNTED_NAME = range(2, 257)


@dataclass
class SideShape:
    """One direction's application records (after the handshake)."""

    records: int = 0
    plaintext: int = 0                      # bytes of plaintext, from the record lengths
    first_len: int | None = None            # plaintext bytes of the first application record
    first_ts: float | None = None
    last_ts: float | None = None
    last_len: int | None = None             # plaintext bytes of the last application record


@dataclass
class TlsShape:
    client_finished_ts: float | None = None
    sides: tuple[SideShape, SideShape] = field(default_factory=lambda: (SideShape(), SideShape()))
    ccs: list[bool] = field(default_factory=lambda: [False, False])   # each side's ChangeCipherSpec seen
    tls12: bool = False                     # the client's Finished came as a protected handshake record
    overhead: int = OVERHEAD                # record bytes beyond the plaintext

    @property
    def handshake_done(self) -> bool:
        return self.client_finished_ts is not None

    @property
    def version_text(self) -> str:
        return "TLS 1.2" if self.tls12 else "TLS 1.3"

    def protected_close(self, direction: int) -> bool:
        """An alert record from ``direction`` now is protected and follows that side's application data:
        most likely a close_notify (TLS 1.2; TLS 1.3 hides alerts as application data)."""
        return self.ccs[direction] and self.sides[direction].records > 0

    def take(self, direction: int, rec: Record) -> None:
        f = rec.fields
        ctype = f.get("content_type")
        if ctype == "change_cipher_spec":
            self.ccs[direction] = True
            return
        if ctype == "handshake":
            size = int(f.get("len", 0))
            if (direction == 0 and self.ccs[0] and self.client_finished_ts is None
                    and FINISHED12_PLAINTEXT < size <= FINISHED12_MAX_RECORD):
                self.tls12 = True
                self.overhead = size - FINISHED12_PLAINTEXT
                self.client_finished_ts = rec.ts
            return
        if ctype != "application_data":
            return
        n = int(f.get("len", 0)) - self.overhead
        if direction == 0 and self.client_finished_ts is None:
            if n in FINISHED_PLAINTEXT:
                self.client_finished_ts = rec.ts
            return
        if direction == 1 and self.client_finished_ts is None:
            return                              # the server's own handshake flight
        side = self.sides[direction]
        side.records += 1
        side.plaintext += max(n, 0)
        if side.first_len is None:
            side.first_len, side.first_ts = n, rec.ts
        side.last_ts = rec.ts
        side.last_len = n

    def acknowledged(self) -> bool:
        """The destination's last application record came after the source's last one and holds 8 bytes:
        the size of the return path's SHUT (a 4-byte header and a 4-byte status), which a destination sends
        once it has loaded the whole stream (a PONG is as long, but answers a PING, which is not last)."""
        src, dst = self.sides
        return (dst.last_len == RP_SHUT_SIZE and dst.last_ts is not None and src.last_ts is not None
                and dst.last_ts >= src.last_ts)

    def looks_recovery(self) -> bool:
        """The source's first write has the size of a RECV_BITMAP command and the destination's first one,
        after it, that of the RECV_BITMAP message naming the same block (see the module's doc)."""
        src, dst = self.sides
        if src.first_len is None or dst.first_len is None or src.first_ts is None or dst.first_ts is None:
            return False
        name = src.first_len - COMMAND_HEADER
        return dst.first_ts >= src.first_ts and name in COUNTED_NAME and dst.first_len - RP_HEADER == name

    def recovery_text(self) -> str:
        src, dst = self.sides
        return (f"its first TLS application record holds {src.first_len} bytes of plaintext, the size of a "
                f"RECV_BITMAP command naming a {src.first_len - COMMAND_HEADER - 1}-byte RAM block, and the "
                f"destination's first answer {dst.first_len}, the size of its RECV_BITMAP message naming the same "
                "block")

    def looks_multifd(self) -> bool:
        return self.sides[0].first_len == MULTIFD_HELLO_SIZE

    def first_write_text(self) -> str:
        s = self.sides[0]
        if s.first_len is None:
            return "no application data from the source after the TLS handshake"
        return (f"its first TLS application record holds {s.first_len} bytes of plaintext"
                + (" (the size of a multifd hello)" if s.first_len == MULTIFD_HELLO_SIZE else ""))


NO_SHAPE = TlsShape()        # shared by every connection that showed no TLS record (never fed)
