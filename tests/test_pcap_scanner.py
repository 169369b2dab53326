"""The compiled scanner (``capture/_pcapscan.c``) gives exactly what the pure-Python walks give (pcap, pcapng).

Every comparison reads the same file twice, with the scanner and with ``MIGSHARK_PURE_PYTHON=1``, and
compares segments (payload bytes included), ``stats`` and warnings. Random record streams, damaged
files and the real corpus; the scanner must never crash on any of them.
"""

from __future__ import annotations

import gzip
import random
import shutil
import struct
import subprocess
import sysconfig
from pathlib import Path

import pytest
from capture_helpers import arp_frame, ipv4_fragment_frame, udp_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dissectors.capture import open_capture
from dissectors.capture.limits import BATCH_BYTES
from dissectors.capture.linktypes import LINK_LAYOUTS
from dissectors.capture.scanner import compiled_scanner
from dissectors.capture.writer import PcapngWriter, PcapWriter, tcp_frame

CAPTURES = sorted((Path(__file__).resolve().parent.parent / "captures").glob("*.pcap*"))


def _can_compile() -> bool:
    """A C compiler and this Python's headers: ``pip install`` then builds the scanner."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return headers.exists() and any(shutil.which(cc) for cc in ("cc", "gcc"))


needs_scanner = pytest.mark.skipif(compiled_scanner() is None,
                                   reason="compiled scanner not built (no C compiler or Python headers)")


def _read(path: Path, pure: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list, object, list[str], int]:
    with monkeypatch.context() as m:
        if pure:
            m.setenv("MIGSHARK_PURE_PYTHON", "1")
        else:
            m.delenv("MIGSHARK_PURE_PYTHON", raising=False)
        with open_capture(path) as cap:
            batches = [[(k, ts, seq, fl, bytes(p), miss) for k, ts, seq, fl, p, miss in b]
                       for b in cap.keyed_batches()]
            return [s for b in batches for s in b], cap.stats, list(cap.warnings), len(batches)


def _assert_same(path: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    fast, fast_stats, fast_warnings, _ = _read(path, False, monkeypatch)
    pure, pure_stats, pure_warnings, _ = _read(path, True, monkeypatch)
    assert fast == pure
    assert fast_stats == pure_stats
    assert fast_warnings == pure_warnings
    return fast


def test_scanner_is_built_where_it_can_be(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a compiler and headers exist (CI, set-up script), a silent fall-back to pure Python fails."""
    monkeypatch.delenv("MIGSHARK_PURE_PYTHON", raising=False)
    if not _can_compile():
        pytest.skip("no C compiler or Python headers here: the pure-Python walk is what runs")
    assert compiled_scanner() is not None, "reinstall with `pip install -e .` to build capture/_pcapscan.c"


@needs_scanner
def test_bad_link_layouts_are_refused() -> None:
    scan = compiled_scanner()
    assert scan is not None
    for l2len, proto_off in ((-1, -1), (65, 0), (14, 13), (0, 0), (14, -2)):
        with pytest.raises(ValueError, match="bad link header layout"):
            scan(memoryview(b""), 0, 0, 0, False, 1e6, 1 << 20, l2len, proto_off)


@needs_scanner
def test_bad_arguments_raise_cleanly() -> None:
    """Wrong types raise their own error (not SystemError); a window of non-byte items is refused."""
    scan, ng = compiled_scanner("pcap"), compiled_scanner("pcapng")
    assert scan is not None and ng is not None

    class Truthy:
        def __bool__(self) -> bool:
            raise RuntimeError("asked")

    with pytest.raises(TypeError):
        scan(memoryview(b""), "0", 0, 0, Truthy(), 1e6, 1, 14, 12)
    with pytest.raises(RuntimeError, match="asked"):
        scan(memoryview(b""), 0, 0, 0, Truthy(), 1e6, 1, 14, 12)
    with pytest.raises(TypeError):
        scan(memoryview(b""), 0, 0, 0, False, 1e6, 1, 14)
    with pytest.raises(ValueError, match="divisor"):
        ng(memoryview(b""), 0, 0, 0, False, 0, -(10 ** 30), 0, 1, 14, 12)
    with pytest.raises(ValueError, match="one-dimensional memoryview of bytes"):
        scan(memoryview(bytes(64)).cast("I"), 0, 64, 64, False, 1e6, 1 << 20, 14, 12)


def test_pure_python_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGSHARK_PURE_PYTHON", "1")
    assert compiled_scanner() is None


@needs_scanner
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_real_captures(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _assert_same(path, monkeypatch)


def _flow(i: int, payload: bytes) -> bytes:
    return tcp_frame("10.0.0.1", "10.0.0.2", 40000 + i % 3, 4444, 1000 + 7919 * i, 5, "PA", payload)


# One record of each kind the scanner must leave to Python, or take itself.
_ODD_FRAMES = {
    "tcp": lambda i: _flow(i, bytes([i & 0xFF]) * (i % 1500)),
    "ack": lambda i: _flow(i, b""),
    "syn": lambda i: tcp_frame("10.0.0.1", "10.0.0.2", 40000, 4444, i, 0, "S"),
    "options": lambda i: tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, i, 0, "PA", b"opt", ip_options=b"\x01" * 4),
    "vlan": lambda i: tcp_frame("10.0.0.1", "10.0.0.2", 1, 2, i, 0, "PA", b"vlan", vlan=7),
    "ipv6": lambda i: tcp_frame("2001:db8::1", "2001:db8::2", 1, 2, i, 0, "PA", b"six"),
    "udp": lambda i: udp_frame(),
    "arp": lambda i: arp_frame(),
    "fragment": lambda i: ipv4_fragment_frame(i % 4, True),
    "runt": lambda i: _flow(i, b"")[:40],
}


def relink(frame: bytes, link: str) -> bytes:
    """An Ethernet frame re-framed for another link type (its ethertype kept where the link has one)."""
    ethertype, body = frame[12:14], frame[14:]
    mac = bytes.fromhex("020000000001") + b"\0\0"
    if link == "sll":
        return struct.pack("!HHH8s", 0, 772, 6, mac) + ethertype + body
    if link == "sll2":
        return ethertype + struct.pack("!HIHBB8s", 0, 1, 772, 0, 6, mac) + body
    if link == "raw":
        return body
    return frame


@needs_scanner
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(sorted(_ODD_FRAMES)), min_size=1, max_size=120),
       snaplen=st.sampled_from([262144, 96, 60, 54]), big=st.booleans(), nano=st.booleans(),
       cut=st.integers(min_value=0, max_value=200), link=st.sampled_from(["ether", "sll", "sll2", "raw"]))
def test_random_record_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kinds: list[str],
                               snaplen: int, big: bool, nano: bool, cut: int, link: str) -> None:
    path = tmp_path / "mix.pcap"
    with PcapWriter(path, linktype=link, snaplen=snaplen, nanosecond=nano, big_endian=big) as w:
        for i, kind in enumerate(kinds):
            w.write(1700000000 + i / 7, relink(_ODD_FRAMES[kind](i), link))
    data = path.read_bytes()
    if cut:
        path.write_bytes(data[:max(24, len(data) - cut)])  # a file cut inside its last record(s)
    _assert_same(path, monkeypatch)


@needs_scanner
@pytest.mark.parametrize("link,ipv6", [("sll", False), ("sll2", False), ("raw", False), ("ether", True),
                                       ("sll2", True), ("raw", True)])
def test_other_link_types_take_the_scanner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str,
                                           ipv6: bool) -> None:
    """``tcpdump -i any`` (SLL, SLL2), raw-IP and IPv6 captures: the scanner reads every frame of them."""
    path = tmp_path / f"{link}.pcap"
    hosts = ("2001:db8::1", "2001:db8::2") if ipv6 else ("10.0.0.1", "10.0.0.2")
    with PcapWriter(path, linktype=link) as w:
        for i in range(2000):
            frame = tcp_frame(*hosts, 40000 + i % 3, 4444, 1000 + 7919 * i, 5, "PA", b"q" * 1000)
            w.write(1.0 + i / 1000, relink(frame, link))
    scanned = []
    real = compiled_scanner

    def counting(kind: str = "pcap"):
        fn = real(kind)

        def scan(*args):
            out = fn(*args)
            scanned.append(out[2])
            return out
        return scan if fn else None

    monkeypatch.setattr("dissectors.capture.pcap.compiled_scanner", counting)
    segs, _, _, _ = _read(path, False, monkeypatch)
    assert len(segs) == 2000 and sum(scanned) == 2000
    assert segs == _assert_same(path, monkeypatch)


@needs_scanner
def test_batches_stay_small_and_ordered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Long runs of plain frames come in lists of about ``BATCH_BYTES`` of capture, in file order."""
    path = tmp_path / "bulk.pcap"
    with PcapWriter(path) as w:
        for i in range(3000):
            w.write(1.0 + i / 1000, _flow(i, b"p" * 1400) if i % 500 else udp_frame())
    segs, _, _, batches = _read(path, False, monkeypatch)
    assert len(segs) == 3000 - 6
    assert batches >= 3000 * 1454 // BATCH_BYTES
    assert [s[1] for s in segs] == sorted(s[1] for s in segs)
    _assert_same(path, monkeypatch)


@needs_scanner
def test_damaged_copies_of_a_real_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit flips and a huge caplen in a real capture: same result both ways, no crash."""
    raw = bytearray(gzip.decompress(CAPTURES[0].read_bytes()) if CAPTURES[0].suffix == ".gz"
                    else CAPTURES[0].read_bytes())
    rng = random.Random(1234)
    for trial in range(12):
        data = bytearray(raw)
        for _ in range(40):
            data[rng.randrange(24, len(data))] = rng.randrange(256)
        if trial % 3 == 0:  # a record header somewhere claiming 4 GB
            struct.pack_into("<I", data, 24 + 8, 0xFFFFFFF0)
        path = tmp_path / f"damaged{trial}.pcap"
        path.write_bytes(bytes(data))
        _assert_same(path, monkeypatch)


@needs_scanner
def test_gzip_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gzip capture is read in windows: records straddling a window's end go through Python."""
    path = tmp_path / "bulk.pcap.gz"
    with gzip.open(path, "wb") as f, PcapWriter(f) as w:
        for i in range(6000):
            w.write(1.0 + i / 1000, _flow(i, bytes([i & 0xFF]) * (1 + i % 1460)))
    assert len(_assert_same(path, monkeypatch)) == 6000


@needs_scanner
@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=0, max_size=400),
       pos=st.one_of(st.integers(-5, 420), st.integers(-(1 << 63), (1 << 63) - 1)),
       stop=st.one_of(st.integers(-5, 1 << 40), st.integers(-(1 << 63), (1 << 63) - 1)),
       end=st.one_of(st.integers(-5, 1 << 40), st.integers(-(1 << 63), (1 << 63) - 1), st.just(-(1 << 63))),
       big=st.booleans(), max_record=st.integers(0, 1 << 62))
def test_scanner_on_arbitrary_bytes_and_bounds(data: bytes, pos: int, stop: int, end: int, big: bool,
                                              max_record: int) -> None:
    """Called directly with any window and any bounds, both scanners: no crash, nothing past the window.
    (The reads themselves were checked under AddressSanitizer and UBSan, ~1.7 M calls on mutated real
    streams in every link layout, when the scanner was written.)"""
    scan = compiled_scanner()
    assert scan is not None
    ng = compiled_scanner("pcapng")
    assert ng is not None
    for layout in LINK_LAYOUTS.values():
        segs, new_pos, frames, cut, status = scan(memoryview(data), pos, stop, end, big, 1e6, max_record, *layout)
        assert len(segs) == frames and 0 <= cut <= frames and status in (0, 1, 2)
        assert new_pos == pos or (pos <= new_pos <= len(data) and frames)
        for key, _ts, _seq, _flags, payload, missing in segs:
            assert len(key) == 12 and missing == 0 and len(payload) <= len(data)
        for divisor in (1_000_000, 10 ** 30):
            segs, new_pos, frames, cut, status = ng(memoryview(data), pos, stop, end, big, 0, divisor, -3, max_record,
                                                    *layout)
            assert len(segs) == frames and 0 <= cut <= frames and status in (0, 1, 2)
            assert new_pos == pos or (pos <= new_pos <= len(data) and frames)


# ---- pcapng -------------------------------------------------------------------------------------------

_INTERFACES = {  # (link type, if_tsresol, if_tsoffset, first timestamp: 64-bit stamps must hold it)
    "ether-us": ("ether", 6, 0, 1_700_000_000),
    "ether-ns": ("ether", 9, 0, 1_700_000_000),     # stamps past 2^53: the scanner divides as Python does
    "ether-2^-30": ("ether", 0x80 | 30, 0, 1_700_000_000),
    "ether-2^-60": ("ether", 0x80 | 60, 0, 1),       # a divisor past 2^53
    "ether-offset": ("ether", 6, 1_600_000_000, 1_700_000_000),
    "ether-ps": ("ether", 12, -5, 1_000_000),         # picoseconds, negative offset
    "raw": ("raw", 6, 0, 1_700_000_000),
    "sll2": ("sll2", 9, 0, 1_700_000_000),
}


@needs_scanner
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ifaces=st.lists(st.sampled_from(sorted(_INTERFACES)), min_size=1, max_size=3),
       frames=st.lists(st.tuples(st.sampled_from(sorted(_ODD_FRAMES)), st.integers(0, 2),
                                 st.sampled_from(["epb", "epb", "epb", "spb", "custom"])),
                       min_size=1, max_size=100),
       snaplen=st.sampled_from([0, 262144, 96, 54]), big=st.booleans(), cut=st.integers(0, 120))
def test_random_pcapng_streams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ifaces: list[str],
                               frames: list[tuple[str, int, str]], snaplen: int, big: bool, cut: int) -> None:
    path = tmp_path / "mix.pcapng"
    with PcapngWriter(path, big_endian=big) as w:
        for name in ifaces:
            link, tsresol, tsoffset, _first = _INTERFACES[name]
            w.add_interface(link, snaplen=snaplen, tsresol=tsresol, tsoffset=tsoffset)
        for i, (kind, iface, block) in enumerate(frames):
            frame = relink(_ODD_FRAMES[kind](i), _INTERFACES[ifaces[iface % len(ifaces)]][0])
            if block == "spb":
                w.write(0, frame, simple=True)
            elif block == "custom":
                w.write_block(0x00000BAD, b"custom block body")
            else:
                w.write(_INTERFACES[ifaces[iface % len(ifaces)]][3] + i / 1000, frame, interface=iface % len(ifaces))
    data = path.read_bytes()
    if cut:
        path.write_bytes(data[:max(28, len(data) - cut)])
    _assert_same(path, monkeypatch)


@needs_scanner
def test_pcapng_sections_and_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two sections of opposite byte order, then bit flips: the same both ways, no crash."""
    path = tmp_path / "two.pcapng"
    with open(path, "wb") as f:
        for section, big in enumerate((False, True)):
            w = PcapngWriter(f, big_endian=big)
            w.add_interface(tsresol=9)
            for i in range(400):
                w.write(1_700_000_000 + section + i / 1000, _flow(i, bytes([i & 0xFF]) * (i % 1400)))
            w.close()
    segs = _assert_same(path, monkeypatch)
    assert len(segs) == 800
    raw = bytearray(path.read_bytes())
    rng = random.Random(99)
    for _trial in range(10):
        data = bytearray(raw)
        for _ in range(30):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        _assert_same(path, monkeypatch)


@needs_scanner
@pytest.mark.skipif(shutil.which("editcap") is None, reason="needs Wireshark's editcap")
@pytest.mark.parametrize("path", CAPTURES[:6], ids=lambda p: p.name)
def test_real_captures_as_pcapng(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """The corpus converted by editcap (what dumpcap writes): the same both ways, and the same as the pcap."""
    out = tmp_path / (path.name.split(".")[0] + ".pcapng")
    subprocess.run(["editcap", "-F", "pcapng", str(path), str(out)], check=True, capture_output=True)
    assert _assert_same(out, monkeypatch) == _read(path, False, monkeypatch)[0]


def test_version_says_which_reader_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from dissectors.cli.main import main

    for pure, expected in ((True, "pure Python (MIGSHARK_PURE_PYTHON is set)"),
                           (False, "compiled scanner" if compiled_scanner() else "was not built")):
        if pure:
            monkeypatch.setenv("MIGSHARK_PURE_PYTHON", "1")
        else:
            monkeypatch.delenv("MIGSHARK_PURE_PYTHON", raising=False)
        with pytest.raises(SystemExit) as exc:
            main(["--version"])
        assert exc.value.code == 0
        assert expected in capsys.readouterr().out


# ---- the scanner coalescing as it reads (``Capture.keyed_runs``) ------------------------------------------

def _plain(x: object) -> object:
    """Entries with payload bytes instead of memoryviews (comparable after the capture is closed)."""
    if isinstance(x, memoryview):
        return bytes(x)
    if isinstance(x, list | tuple):
        return type(x)(_plain(i) for i in x)
    return x


def _assert_runs_same(path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """``keyed_runs`` (the scanner coalescing as it reads) gives exactly ``coalesce`` of every list of
    ``keyed_batches``, with the same ``exclude`` dict changing between lists (a direction asked one by one
    from the second list on, and forgotten after the fourth); returns how many runs there were."""
    from dissectors.capture.scanner import COALESCE_WINDOW, compiled_coalescer
    from dissectors.tcp.flags import CONTROL

    monkeypatch.delenv("MIGSHARK_PURE_PYTHON", raising=False)
    monkeypatch.delenv("MIGSHARK_NO_COALESCE", raising=False)
    coalesce = compiled_coalescer()
    assert coalesce is not None
    results = []
    for fused in (False, True):
        exclude: dict[bytes, bool] = {}
        got = []
        with open_capture(path) as cap:
            items = (cap.keyed_runs(coalesce, COALESCE_WINDOW, CONTROL, exclude) if fused else
                     (coalesce(b, COALESCE_WINDOW, CONTROL, exclude) for b in cap.keyed_batches()))
            for entries, last in items:
                got.append(_plain((entries, last)))
                if len(got) == 1 and entries:
                    exclude[entries[0][0]] = True
                elif len(got) == 4:
                    exclude.clear()
        results.append(got)
    assert results[0] == results[1]
    return sum(isinstance(e[5], tuple) for entries, _ in results[1] for e in entries)


@needs_scanner
@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_real_captures_coalesced_as_read(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _assert_runs_same(path, monkeypatch)


@needs_scanner
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(sorted(_ODD_FRAMES)), min_size=1, max_size=120),
       snaplen=st.sampled_from([262144, 96]), pcapng=st.booleans(), big=st.booleans(),
       link=st.sampled_from(["ether", "sll2", "raw"]), same=st.integers(1, 6))
def test_random_streams_coalesced_as_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kinds: list[str],
                                          snaplen: int, pcapng: bool, big: bool, link: str, same: int) -> None:
    """Mixed records (pcap and pcapng, three link layouts): runs of in-order segments broken by control,
    odd and cut frames come out of the scanner exactly as ``coalesce`` makes them."""
    path = tmp_path / ("mix.pcapng" if pcapng else "mix.pcap")
    seqs = [1000, 90000, 7]
    frames = []
    for i, kind in enumerate(kinds):
        if kind == "tcp":                      # in-order payload of one of three directions: runs
            d = i % same % 3
            payload = bytes([i & 0xFF]) * (1 + (i * 37) % 1400)
            frames.append(tcp_frame("10.0.0.1", "10.0.0.2", 40000 + d, 4444, seqs[d], 5, "PA", payload))
            seqs[d] += len(payload)
        else:
            frames.append(_ODD_FRAMES[kind](i))
    if pcapng:
        with PcapngWriter(path, big_endian=big) as w:
            w.add_interface(link, snaplen=snaplen)
            for i, frame in enumerate(frames):
                w.write(1700000000 + i / 7, relink(frame, link))
    else:
        with PcapWriter(path, linktype=link, snaplen=snaplen, big_endian=big) as w:
            for i, frame in enumerate(frames):
                w.write(1700000000 + i / 7, relink(frame, link))
    _assert_runs_same(path, monkeypatch)


@needs_scanner
@pytest.mark.parametrize("ipv6", [False, True])
def test_bulk_coalesced_as_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ipv6: bool) -> None:
    """Bulk in-order data of two interleaved directions (IPv4 or IPv6, plain and gzip): many runs, the same as
    ``coalesce`` gives."""
    hosts = ("2001:db8::1", "2001:db8::2") if ipv6 else ("10.0.0.1", "10.0.0.2")
    for name in ("bulk.pcap", "bulk.pcap.gz"):
        path = tmp_path / name
        seqs = [5, 1 << 31]
        with (gzip.open(path, "wb") if name.endswith(".gz") else open(path, "wb")) as f, PcapWriter(f) as w:
            for i in range(4000):
                d = (i // 7) % 2
                frame = tcp_frame(*hosts, 40000 + d, 4444, seqs[d], 5, "A", b"p" * 1400 if i % 9 else b"")
                seqs[d] = (seqs[d] + (1400 if i % 9 else 0)) & 0xFFFFFFFF
                w.write(1.0 + i / 1000, frame)
        assert _assert_runs_same(path, monkeypatch) > 100


@needs_scanner
@settings(max_examples=150, deadline=None)
@given(data=st.binary(min_size=0, max_size=400), pos=st.integers(-5, 420), stop=st.integers(-5, 1 << 40),
       end=st.integers(-5, 1 << 40), big=st.booleans(), window=st.integers(0, 1 << 16))
def test_coalescing_scanner_on_arbitrary_bytes(data: bytes, pos: int, stop: int, end: int, big: bool,
                                               window: int) -> None:
    """The coalescing form of both scanners on any bytes: no crash, a well-formed answer."""
    from dissectors.capture.scanner import scanner_coalesces

    if not scanner_coalesces():
        pytest.fail("the compiled scanner predates coalescing as it reads: rebuild it (pip install -e .)",
                    pytrace=False)
    scan, ng = compiled_scanner(), compiled_scanner("pcapng")
    assert scan is not None and ng is not None
    for layout in LINK_LAYOUTS.values():
        for out in (scan(memoryview(data), pos, stop, end, big, 1e6, 1 << 20, *layout, window, 7, None),
                    ng(memoryview(data), pos, stop, end, big, 0, 1_000_000, 0, 1 << 20, *layout, window, 7, {})):
            entries, new_pos, frames, cut, status, last = out
            assert len(entries) <= frames and 0 <= cut <= frames and status in (0, 1, 2)
            assert (last is None) == (frames == 0)
    with pytest.raises(TypeError, match="exclude"):
        scan(memoryview(data), 0, 0, 0, big, 1e6, 1 << 20, 14, 12, window, 7, [])


@needs_scanner
def test_payload_views_narrowed_from_the_window(tmp_path: Path) -> None:
    """Payloads are views narrowed from a memoryview window (on its buffer, contiguous, the right bytes), of
    bytes or of a bytearray; a bytes window is sliced; a window that is not contiguous is refused."""
    path = tmp_path / "few.pcap"
    with PcapWriter(path) as w:
        for i in range(20):
            w.write(1.0 + i, _flow(i, bytes([i]) * (10 + i)))
    data = path.read_bytes()
    scan = compiled_scanner()
    assert scan is not None
    for window in (memoryview(data), memoryview(bytearray(data)), data):
        segs, pos, frames, _, _ = scan(window, 24, len(data), len(data), False, 1e6, 1 << 20, 14, 12)
        assert frames == 20 and pos == len(data)
        assert [bytes(s[4]) for s in segs] == [bytes([i]) * (10 + i) for i in range(20)]
        if isinstance(window, memoryview):
            assert all(s[4].contiguous and s[4].obj is window.obj and s[4].readonly == window.readonly for s in segs)
    doubled = bytes(b for c in data for b in (c, 0xEE))
    with pytest.raises(BufferError):
        scan(memoryview(doubled)[::2], 24, len(data), len(data), False, 1e6, 1 << 20, 14, 12)
