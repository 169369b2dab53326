"""tls: decrypt TLS 1.3 and TLS 1.2 (AEAD suites) connections with an NSS key log, as a byte-stream
transform between TCP reassembly and whatever consumes the streams. Knows nothing of QEMU or of files.

``KeyLog`` holds the secrets (``KeyLog.parse(text)``); ``TlsStreamSink(inner, keylog)`` is a TCP
``StreamSink`` that hands ``inner`` the plaintext application data of a TLS connection whose ClientHello
random is in the key log, or the connection's bytes unchanged otherwise; ``status`` says which and why.
``TlsConnection`` is the sans-IO core (record framing, key schedule, AEAD), fed ciphertext per direction.

>>> keylog = KeyLog.parse(open("migration.keylog").read(), "migration.keylog")   # doctest: +SKIP
>>> tracker = TcpTracker(lambda conn: TlsStreamSink(ChannelSink(print), keylog))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dissectors.tls.connection import Plaintext, TlsConnection, TlsProblem
    from dissectors.tls.keylog import KeyLog, KeyLogError
    from dissectors.tls.sink import TlsStatus, TlsStreamSink

__all__ = ["KeyLog", "KeyLogError", "Plaintext", "TlsConnection", "TlsProblem", "TlsStatus", "TlsStreamSink"]

#: Where each name lives: the submodules load when a name is first used, so a run without a key log, which
#: decrypts nothing, does not import the record layer and the key schedules (start-up time).
_HOME = {"Plaintext": "connection", "TlsConnection": "connection", "TlsProblem": "connection",
         "KeyLog": "keylog", "KeyLogError": "keylog", "TlsStatus": "sink", "TlsStreamSink": "sink"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"dissectors.tls.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
