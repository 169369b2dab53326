"""``cryptography``'s primitives, imported on first use: a run without a key log never decrypts, so it does
not pay the import (~40 ms of start-up)."""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace


@cache
def crypto() -> SimpleNamespace:
    """The primitives the record decryption uses (``crypto().AESGCM``, ``crypto().InvalidTag``, ...)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    return SimpleNamespace(InvalidTag=InvalidTag, hashes=hashes, hmac=hmac, Cipher=Cipher, algorithms=algorithms,
                           modes=modes, AESGCM=AESGCM, ChaCha20Poly1305=ChaCha20Poly1305, HKDFExpand=HKDFExpand)


class SuiteParts:
    """A cipher suite's hash and AEAD by name (``"SHA256"``, ``"AESGCM"``), their ``cryptography`` classes
    read on first use; ``digest_size`` without importing ``cryptography`` (nor ``hashlib``, whose OpenSSL
    load costs as much)."""

    hash_name: str
    aead_name: str

    @property
    def hash(self) -> type:
        """The ``cryptography.hazmat.primitives.hashes`` class."""
        return getattr(crypto().hashes, self.hash_name)  # type: ignore[no-any-return]

    @property
    def aead(self) -> type:
        """The ``cryptography`` AEAD class."""
        return getattr(crypto(), self.aead_name)  # type: ignore[no-any-return]

    @property
    def digest_size(self) -> int:
        """Bytes of the hash's output: the bits its name (``SHA256``, ``SHA384``) gives, over 8."""
        return int(self.hash_name.removeprefix("SHA")) // 8
