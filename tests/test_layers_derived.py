"""``dissectors/layers/derived.py`` is what the Scapy layers give (regenerated in memory here), and the
Scapy-free layouts ``unpack`` builds from it are the ones ``structs`` builds from the classes."""

from __future__ import annotations

import pytest

from dissectors.layers import derive, derived, ram, unpack
from dissectors.layers import structs as S


def test_the_committed_file_is_what_the_layers_give() -> None:
    text = derive.render()
    assert derive.TARGET.read_text() == text, (
        "dissectors/layers/derived.py is out of date: run python -m dissectors.layers.derive")


def test_a_changed_layer_changes_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    committed = derive.TARGET.read_text()
    monkeypatch.setattr(ram, "RAM_SAVE_FLAG_HOOK", 0x81)
    assert "RAM_SAVE_FLAG_HOOK = 0x81" in derive.render() and derive.render() != committed


def test_check_mode_exit_codes(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert derive.main(["--check"]) == 0
    monkeypatch.setattr(ram, "ENCODING_FLAG_XBZRLE", 2)
    assert derive.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def _outcome(fn: object, *args: object) -> object:
    """``fn(*args)``, or the ValueError's message it raised (both sides must refuse alike)."""
    try:
        return fn(*args)  # type: ignore[operator]
    except ValueError as exc:
        return ("ValueError", str(exc))


@pytest.mark.parametrize("name", sorted(derived.FIELDS))
def test_every_range_of_every_layer_unpacks_alike(name: str) -> None:
    cls = derive.layers()[name]
    fields = [f.name for f in cls.fields_desc]
    assert [f[0] for f in derived.FIELDS[name]] == fields
    for i, first in enumerate(fields):
        for last in fields[i:]:
            want = _outcome(S.layout_of, cls, first, last)
            assert _outcome(unpack.layout_of, name, first, last) == want, (first, last)
    assert _outcome(unpack.layout_of, name, None, None) == _outcome(S.layout_of, cls, None, None)
    for fname, kind, _ in derived.FIELDS[name]:
        if kind == "items":
            assert unpack.item_struct(name, fname).format == S.item_struct(cls, fname).format
    if name in derived.WIRE_SIZES:
        assert derived.WIRE_SIZES[name] == len(bytes(cls()))


def test_every_layer_is_in_the_table() -> None:
    assert set(derived.FIELDS) == set(derive.layers())
    assert {"RamRecord", "MultifdRamPacket", "TlsHandshakeStart", "QemuFileHeader"} <= set(derived.FIELDS)


def test_named_layouts_from_either_side_read_the_same_bytes() -> None:
    from dissectors.layers.ram import RamRecord

    word = (0x12345 << 12 | 0x28).to_bytes(8, "big")
    assert unpack.named("RamRecord", "addr", "flags").unpack_from(word) == S.named(
        RamRecord, "addr", "flags").unpack_from(word)
    with pytest.raises(KeyError, match="regenerate"):
        unpack.named("NoSuchLayer")


def test_counted_at_reads_the_declared_prefix() -> None:
    from dissectors.layers.strings import COUNTED_LENGTH

    assert COUNTED_LENGTH.size == 1
    assert unpack.counted_at(b"\x03ramX", 0, 5) == (b"ram", 4)
    assert unpack.counted_at(b"\x05ram", 0, 4) is None


def test_a_changed_field_changes_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from scapy.fields import IntField

    from dissectors.layers.ram import RamZero

    committed = derive.TARGET.read_text()
    monkeypatch.setattr(RamZero, "fields_desc", [IntField("fill", 0)])
    S.field_table.cache_clear()
    try:
        text = derive.render()
    finally:
        S.field_table.cache_clear()
    assert "'RamZero': (\n        ('fill', 'fmt', 'I')," in text and text != committed
