"""NSS key log files (``SSLKEYLOGFILE``, as GnuTLS writes them for QEMU): secrets by ClientHello random.

Lines are ``LABEL <client random, hex> <secret, hex>``; ``#`` starts a comment. The same line may come
twice (source and destination both log into one file) and lines of unrelated connections may be there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Labels read; others (e.g. EARLY_EXPORTER_SECRET) are kept but unused.
TLS13_LABELS = ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET")
TLS12_LABEL = "CLIENT_RANDOM"


class KeyLogError(ValueError):
    """A key log that cannot be read at all; ``describe()`` names the file and line."""

    def __init__(self, name: str, line: int, why: str) -> None:
        super().__init__(f"{name}: line {line}: {why}")
        self.name, self.line, self.why = name, line, why

    def describe(self) -> str:
        return str(self)


@dataclass
class KeyLog:
    name: str = "key log"
    secrets: dict[bytes, dict[str, bytes]] = field(default_factory=dict)   # client random -> label -> secret
    conflicts: list[str] = field(default_factory=list)
    skipped: int = 0            # lines that are not key-log lines (kept going)

    @classmethod
    def parse(cls, text: str, name: str = "key log") -> KeyLog:
        log = cls(name)
        seen_any = False
        for no, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3:
                log.skipped += 1
                continue
            label, random_hex, secret_hex = parts
            try:
                random, secret = bytes.fromhex(random_hex), bytes.fromhex(secret_hex)
            except ValueError:
                log.skipped += 1
                continue
            if len(random) != 32 or not secret:
                log.skipped += 1
                continue
            seen_any = True
            entry = log.secrets.setdefault(random, {})
            old = entry.get(label)
            if old is not None and old != secret:
                log.conflicts.append(f"line {no}: {label} for client random {random_hex[:16]}... differs from an "
                                     "earlier line; the earlier one is used")
                continue
            entry[label] = secret
        if not seen_any and log.skipped:
            raise KeyLogError(name, 1, "no line of the NSS key log format (LABEL <client random> <secret>)")
        return log

    @classmethod
    def load(cls, path: str) -> KeyLog:
        with open(path, encoding="ascii", errors="replace") as f:
            return cls.parse(f.read(), str(path))

    def for_random(self, client_random: bytes) -> dict[str, bytes]:
        return self.secrets.get(client_random, {})

    def __len__(self) -> int:
        return len(self.secrets)
