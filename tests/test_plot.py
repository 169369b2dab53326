"""The timeline picture (``analyze --plot``) on real corpus captures: geometry read back from the rendered
figure (no label over a marker or another label), the byte scale, QEMU's message in the misread lane,
colour-blind safe stall and misclassification marks, relay legs, and matplotlib kept out of runs that do
not draw."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from dissectors.cli.main import main  # noqa: E402
from dissectors.cli.pipeline import analyze_file, load_keylog  # noqa: E402
from dissectors.outputs import plot  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
# relays with 10 lanes, stalls over misclassified lanes, postcopy with page requests, recovery legs, netpath
CORPUS = ["holdback-multifd-7.2", "holdback-preempt-7.2", "multifd4-postcopy-preempt-11.1", "postcopy-7.2",
          "netpath-multifd4-7.2-misorder.src", "preempt-recover-11.1", "holdback-multifd-7.2-to-10.0",
          "multifd4-7.2"]

_cache: dict[str, object] = {}


def timeline(name: str) -> plot.Timeline:
    if name not in _cache:
        tl = plot.build_timeline(analyze_file(str(CAPTURES / f"{name}.pcap.gz")))
        tl.figure.canvas.draw()
        _cache[name] = tl
    return _cache[name]


def figure(name: str):
    return timeline(name).figure


def _marker_boxes(fig, renderer) -> list[tuple[float, float, float, float]]:
    """Every marker's drawn square, computed here from each line's data and marker size, clipped to its axes."""
    boxes = []
    for ax in fig.axes:
        fr = ax.get_window_extent(renderer)
        for line in ax.get_lines():
            if line.get_marker() in (None, "None", "", " "):
                continue
            r = (line.get_markersize() + line.get_markeredgewidth()) * fig.dpi / 72 / 2
            for px, py in line.get_transform().transform(line.get_xydata()):
                x0, y0, x1, y1 = max(px - r, fr.x0), max(py - r, fr.y0), min(px + r, fr.x1), min(py + r, fr.y1)
                if x0 < x1 and y0 < y1:
                    boxes.append((x0, y0, x1, y1))
    return boxes


def _texts(fig):
    texts = list(fig.texts)
    for ax in fig.axes:
        texts += ax.texts
        texts += [t for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_visible() and t.get_text()]
    texts += fig.legends[0].get_texts() if fig.legends else []
    return [t for t in texts if t.get_text()]


def _box(t, renderer) -> tuple[float, float, float, float]:
    b = t.get_window_extent(renderer)
    patch = t.get_bbox_patch()
    if patch is not None:          # after a draw the background box's extent is the drawn one
        p = patch.get_window_extent(renderer)
        return min(b.x0, p.x0), min(b.y0, p.y0), max(b.x1, p.x1), max(b.y1, p.y1)
    return b.x0, b.y0, b.x1, b.y1


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("name", CORPUS)
def test_no_label_over_a_marker_or_another_label(name):
    fig = figure(name)
    renderer = fig.canvas.get_renderer()
    markers = _marker_boxes(fig, renderer)
    texts = _texts(fig)
    assert markers and len(texts) > 5
    boxes = [(t, _box(t, renderer)) for t in texts]
    for t, b in boxes:
        hits = [m for m in markers if _overlap(b, m)]
        assert not hits, f"{name}: label {t.get_text()!r} at {b} covers markers {hits[:3]}"
    placed = [(t, b) for t, b in boxes if t.get_gid() in ("label:lane-note", "label:lane", "label:header")]
    for i, (t, b) in enumerate(placed):
        for u, c in placed[i + 1:]:
            assert not _overlap(b, c), f"{name}: {t.get_text()!r} overlaps {u.get_text()!r}"


def _notes(name: str, client: str) -> list[str]:
    """The in-lane labels drawn inside a channel's lane, found by geometry."""
    tl = timeline(name)
    return [t.get_text() for t in tl.texts_in(tl.lane(client), tl.figure.canvas.get_renderer())]


def _lane_labels(name: str, client: str) -> list[str]:
    tl = timeline(name)
    band = tl.lane(client)
    return [t.get_text() for t in tl.axes.texts
            if t.get_gid() == "label:lane" and band.y0 <= t.get_position()[1] <= band.y1]


def test_qemu_message_sits_in_the_misread_channels_lane():
    name = "holdback-multifd-7.2"
    # the real main channel, accepted last, is read as multifd channel 3 (QEMU 7.2)
    notes = _notes(name, "127.0.0.1:39298")
    assert any("QEMU would show: failed to receive packet via multifd channel 3" in n and "5145564d" in n
               for n in notes), notes
    assert any("TAKEN AS MULTIFD" in t for t in _lane_labels(name, "127.0.0.1:39298"))
    # the multifd channel taken as main carries its own prediction, not the other's
    notes = " ".join(_notes(name, "127.0.0.1:39260"))
    assert "taken as the main channel" in notes and "multifd channel 3" not in notes
    # lanes of well classified channels carry no QEMU message
    assert not [t for t in _notes(name, "127.0.0.1:39270") if "QEMU would show" in t]


def test_epoch_times_in_messages_are_written_on_the_pictures_axis():
    fig = figure("holdback-preempt-7.2")
    notes = [t.get_text() for ax in fig.axes for t in ax.texts if "QEMU would show" in t.get_text()]
    assert notes and not any("17956" in n for n in notes), notes
    assert any("+21.677 s" in n for n in notes), notes


def test_byte_scale_per_lane_in_readable_units():
    tl = timeline("holdback-preempt-7.2")
    band = tl.lane("127.0.0.1:47900")         # source-side main channel: 8,077,267 bytes sent
    ticks = [(y, t.get_text()) for y, t in zip(tl.axes.get_yticks(), tl.axes.get_yticklabels(), strict=True)
             if band.y0 <= y <= band.y1]
    assert [t for _, t in ticks] == ["0 B", "7.7 MiB"]
    (y_zero, _), (y_top, _) = ticks
    curve = next(line for line in tl.axes.get_lines() if line.get_gid() == "curve:0"
                 and band.y0 <= min(line.get_ydata()) and max(line.get_ydata()) <= band.y1)
    ys = curve.get_ydata()
    assert max(ys) == pytest.approx(y_top) and min(ys) >= y_zero     # the curve's top is the lane's scale top
    assert plot.human_bytes(0) == "0 B" and plot.human_bytes(1536) == "1.5 KiB"
    assert plot.human_bytes(3 * 1024 ** 3) == "3.0 GiB"
    silent = tl.lane("127.0.0.1:47908")        # the silent preempt channel: a zero line only
    assert [t.get_text() for y, t in zip(tl.axes.get_yticks(), tl.axes.get_yticklabels(), strict=True)
            if silent.y0 <= y <= silent.y1] == ["0 B"]
    assert any("sent 7.7 MiB, return 0 B" in t for t in _lane_labels("holdback-preempt-7.2", "127.0.0.1:47900"))


def _cvd_distance(rgb_a, rgb_b) -> float:
    """Smallest CAM02-UCS distance between two colours as seen with full deuteranomaly, protanomaly,
    tritanomaly and in grey (colorspacious's CVD simulation)."""
    from colorspacious import cspace_convert

    worst = float("inf")
    a, b = np.asarray(rgb_a, float), np.asarray(rgb_b, float)
    for cvd in ("deuteranomaly", "protanomaly", "tritanomaly"):
        space = {"name": "sRGB1+CVD", "cvd_type": cvd, "severity": 100}
        sa = np.clip(cspace_convert(a, space, "sRGB1"), 0, 1)
        sb = np.clip(cspace_convert(b, space, "sRGB1"), 0, 1)
        worst = min(worst, float(np.linalg.norm(cspace_convert(sa, "sRGB1", "CAM02-UCS")
                                                - cspace_convert(sb, "sRGB1", "CAM02-UCS"))))
    grey = [0.299, 0.587, 0.114]
    ga, gb = float(np.dot(a, grey)), float(np.dot(b, grey))
    return min(worst, float(np.linalg.norm(cspace_convert([ga] * 3, "sRGB1", "CAM02-UCS")
                                           - cspace_convert([gb] * 3, "sRGB1", "CAM02-UCS"))))


def fill_rgb():
    from matplotlib.colors import to_rgb

    return to_rgb(plot.STALL_COLOUR)


def test_stall_and_misclassification_stay_distinct_where_they_overlap():
    pytest.importorskip("colorspacious")
    name = "holdback-preempt-7.2"           # the destination leg: both channels misclassified inside a stall
    tl = timeline(name)
    fig, ax = tl.figure, tl.axes
    band = tl.lane("127.0.0.1:33364")
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255
    h = img.shape[0]
    (x0, lo), (x1, hi) = ax.transData.transform([(5.0, band.y0), (12.0, band.y1)])
    # a patch inside both the stall band and the hatched lane, clear of curves, markers and labels
    y0, y1 = lo + 0.35 * (hi - lo), lo + 0.6 * (hi - lo)
    patch = img[int(h - y1):int(h - y0), int(x0):int(x1)].reshape(-1, 3)
    colours, counts = np.unique(np.round(patch, 2), axis=0, return_counts=True)
    fill = colours[counts.argmax()]                         # the stall band, the commonest colour
    hatch = max(colours, key=lambda c: np.linalg.norm(c - fill))   # the hatch lines, the farthest from it
    assert counts.max() / counts.sum() > 0.4
    assert np.linalg.norm(hatch - fill) > 0.2
    assert _cvd_distance(fill, hatch) > 10, (fill, hatch)
    # the two marks also differ in kind, not only colour: a fill and a hatch pattern
    stall = [p for p in ax.patches if p.get_fill() and not p.get_hatch() and p.get_facecolor()[:3] == fill_rgb()]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(stall) == 4 and len(hatched) == 2     # stalls on both legs' lanes; two misread channels
    # and the stall alone (the source leg) shows no hatch: pixels there are the fill only
    src = tl.lane("127.0.0.1:47908")
    (sx0, slo), (sx1, shi) = ax.transData.transform([(5.0, src.y0), (12.0, src.y1)])
    only = img[int(h - (slo + 0.6 * (shi - slo))):int(h - (slo + 0.35 * (shi - slo))), int(sx0):int(sx1)]
    assert len(np.unique(np.round(only.reshape(-1, 3), 2), axis=0)) <= 2
    # the palette's stall and misread colours, against white, under every colour blindness
    from matplotlib.colors import to_rgb

    assert _cvd_distance(to_rgb(plot.STALL_COLOUR), to_rgb(plot.MISREAD_COLOUR)) > 20


def test_relay_legs_are_drawn_together_and_named():
    tl = timeline("holdback-preempt-7.2")
    fig = tl.figure
    headers = [t.get_text() for t in tl.axes.texts if t.get_gid() == "label:header"]
    assert headers[0].startswith("Migration 0  relay leg 1/2: source \u2192 relay at 127.0.0.1:39411 (leg 2 is "
                                 "migration 1)")
    assert headers[1].startswith("Migration 1  relay leg 2/2: relay \u2192 destination 127.0.0.1:41299 (leg 1 is "
                                 "migration 0)")
    assert [t for t in fig.texts if t.get_gid() == "label:relay"]
    # one migration, as the text report counts it (the title said "2 migration(s)": a leg each)
    title = next(t.get_text() for t in fig.texts if t.get_gid() == "label:title")
    assert title.endswith("holdback-preempt-7.2.pcap.gz: 1 migration(s), 1 through a relay (two legs)")
    # the leg order follows the relay, not the report's order
    tl2 = timeline("holdback-multifd-7.2")
    assert [t.get_text().split("  ")[0] for t in tl2.axes.texts if t.get_gid() == "label:header"] == \
        ["Migration 0", "Migration 1"]
    assert [(b.migration, b.client) for b in tl2.lanes][:2] == [(0, "127.0.0.1:36412"), (0, "127.0.0.1:36418")]


def test_lanes_and_headings_say_places_and_migrations_in_words():
    """"leg 1 recovery  #0", "M0" and "#0" needed the JSON to read: the lanes say the channel's place in the
    accept order and, with postcopy recoveries, which recovery; headings say "Migration N"."""
    name = "preempt-recover-11.1"
    tl = timeline(name)
    places = [_lane_labels(name, band.client)[0] for band in tl.lanes]
    assert places == ["initial, accepted first  127.0.0.1:42182", "initial, accepted second  127.0.0.1:42186",
                      "first recovery, accepted first  127.0.0.1:57838",
                      "first recovery, accepted second  127.0.0.1:57854"], places
    headers = [t.get_text() for t in tl.axes.texts if t.get_gid() == "label:header"]
    assert headers == ["Migration 0  to 127.0.0.1:51383   COMPLETED   rules: qemu-10.1+"], headers
    # one set of connections: the place alone
    assert _lane_labels("holdback-preempt-7.2", "127.0.0.1:46166")[0] == "accepted second  127.0.0.1:46166"
    # a relay's two legs keep their words ("relay leg 1/2 ... (leg 2 is migration 1)"): no set of connections
    jargon = re.compile(r"\bleg \d(?!/2| is migration)|#\d|\bM\d")
    for n in CORPUS:
        texts = [t.get_text() for t in timeline(n).axes.texts if t.get_gid() in ("label:lane", "label:header")]
        assert not [t for t in texts if jargon.search(t)], n


@pytest.mark.parametrize("name", CORPUS)
def test_lane_names_fit_the_margin_left_of_the_lanes(name):
    """The lane names are right-aligned against the lanes: the longest (a recovery's) must still start inside
    the figure, right of the relay bracket's words."""
    tl = timeline(name)
    renderer = tl.figure.canvas.get_renderer()
    left = max([_box(t, renderer)[2] for t in tl.figure.texts if t.get_gid() == "label:relay"], default=0.0)
    axes_x0 = tl.axes.get_window_extent(renderer).x0
    for t in tl.axes.texts:
        if t.get_gid() == "label:lane":
            x0, _, x1, _ = _box(t, renderer)
            assert left + 2 <= x0 and x1 <= axes_x0, (t.get_text(), x0, x1, left, axes_x0)


def test_every_lane_named_with_its_role_and_bytes():
    name = "multifd4-postcopy-preempt-11.1"
    tl = timeline(name)
    fig = tl.figure
    lanes = [" ".join(_lane_labels(name, band.client)) for band in tl.lanes]
    assert len(lanes) == 6
    assert "main   sent 26.1 MiB, return 1.0 KiB" in lanes[0]
    assert sum("multifd" in x for x in lanes) == 4 and "preempt" in lanes[5]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "page request" in legend and "postcopy starts" in legend
    assert "stall" not in legend and "misclassified channel" not in legend   # nothing of the kind drawn


def test_plot_cli_writes_png_and_an_empty_capture_says_so(tmp_path):
    png = tmp_path / "t.png"
    assert main(["analyze", "--plot", str(png), str(CAPTURES / "holdback-multifd-7.2.pcap.gz")]) == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from capture_helpers import arp_frame  # an ARP-only capture: no migration

    from dissectors.capture.writer import PcapWriter

    empty = tmp_path / "none.pcap"
    w = PcapWriter(str(empty))
    w.write(1.0, arp_frame())
    w.close()
    fig = plot.build_timeline(analyze_file(str(empty))).figure
    assert any("no migration found" in t.get_text() for ax in fig.axes for t in ax.texts)


def test_unwritable_plot_path_is_an_input_error(tmp_path, capsys):
    code = main(["analyze", "--plot", str(tmp_path / "no" / "dir" / "t.png"),
                 str(CAPTURES / "postcopy-7.2.pcap.gz")])
    assert code == 2
    assert "cannot write the timeline" in capsys.readouterr().err


def test_runs_without_plot_never_import_matplotlib():
    cap = str(CAPTURES / "holdback-multifd-7.2.pcap.gz")
    code = ("import sys; from dissectors.cli.main import main\n"
            f"main(['analyze', {cap!r}]); main(['analyze', '--json', {cap!r}])\n"
            f"main(['dissect', '--summary', {cap!r}])\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'PIL'))\n"
            "assert not bad, bad\n"
            f"main(['analyze', '--plot', {str(ROOT / 'build-plot-probe.png')!r}, {cap!r}])\n"
            "assert 'matplotlib.figure' in sys.modules and 'matplotlib.pyplot' not in sys.modules\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        (ROOT / "build-plot-probe.png").unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_relay_legs_ordered_source_leg_first_whatever_the_report_order():
    analysis = analyze_file(str(CAPTURES / "holdback-preempt-7.2.pcap.gz"))
    analysis.report["migrations"].reverse()          # the destination-side leg first
    tl = plot.build_timeline(analysis)
    headers = [t.get_text() for t in tl.axes.texts if t.get_gid() == "label:header"]
    assert [h.split("  ")[0] for h in headers] == ["Migration 0", "Migration 1"]
    assert [b.migration for b in tl.lanes] == [0, 0, 1, 1]


def _many(copies: int) -> plot.Timeline:
    """holdback-multifd-7.2's two legs (10 channels) drawn ``copies`` times, as a capture of many migrations."""
    import copy

    analysis = analyze_file(str(CAPTURES / "holdback-multifd-7.2.pcap.gz"))
    base = analysis.report["migrations"]
    migrations = []
    for k in range(copies):
        for m in base:
            m2 = copy.deepcopy(m)
            m2["id"] = len(migrations)
            if k:
                m2["relay"] = None
            migrations.append(m2)
    analysis.report["migrations"] = migrations
    tl = plot.build_timeline(analysis)
    tl.figure.canvas.draw()
    return tl


def test_many_channels_keep_labels_clear_and_cap_the_lanes():
    tl = _many(3)                     # 30 lanes
    assert len(tl.lanes) == 30
    renderer = tl.figure.canvas.get_renderer()
    markers = _marker_boxes(tl.figure, renderer)
    for t in _texts(tl.figure):
        b = _box(t, renderer)
        assert not [m for m in markers if _overlap(b, m)], t.get_text()
    assert sum("QEMU would show" in t.get_text() for t in tl.axes.texts) == 6
    big = _many(7)                    # 70 channels: the first 60 drawn, the title says so
    assert len(big.lanes) == plot.MAX_LANES
    title = next(t.get_text() for t in big.figure.texts if t.get_gid() == "label:title")
    assert "10 more channel(s) not drawn" in title


def test_a_label_with_no_room_in_its_lane_becomes_a_numbered_note(monkeypatch):
    real = plot.place_label

    def crowded(ax, renderer, band, x, text, obstacles, **kw):
        return None if text.startswith("QEMU would show") else real(ax, renderer, band, x, text, obstacles, **kw)

    monkeypatch.setattr(plot, "place_label", crowded)
    analysis = analyze_file(str(CAPTURES / "holdback-preempt-7.2.pcap.gz"))
    tl = plot.build_timeline(analysis)
    fig = tl.figure
    fig.canvas.draw()
    notes = [t.get_text() for t in fig.texts if t.get_gid() == "label:note"]
    assert len(notes) == 2 and notes[0].startswith("[1] Migration 1, 127.0.0.1:33364 (the first of the initial "
                                                   "connections): QEMU would show: stall, no error"), notes
    assert "+21.677 s" in notes[0]
    refs = [t.get_text() for t in tl.axes.texts if t.get_gid() == "label:lane-note"]
    assert "[1]" in refs and "[2]" in refs
    # the notes sit under the legend, inside the taller figure, clear of markers and of each other
    renderer = fig.canvas.get_renderer()
    legend_box = fig.legends[0].get_window_extent(renderer)
    boxes = [_box(t, renderer) for t in fig.texts if t.get_gid() == "label:note"]
    assert all(b[3] <= legend_box.y0 and b[1] >= 0 for b in boxes)
    markers = _marker_boxes(fig, renderer)
    assert not [m for t in _texts(fig) for m in markers if _overlap(_box(t, renderer), m)]


def test_tls_channels_say_so():
    name = "multifd-tls-7.2"           # no key log: roles from the TLS records' shape
    tl = timeline(name)
    labels = [" ".join(_lane_labels(name, band.client)) for band in tl.lanes]
    assert len(labels) == 3 and all("(TLS)" in x for x in labels), labels
    keyed = plot.build_timeline(analyze_file(str(CAPTURES / f"{name}.pcap.gz"),
                                             keylog=load_keylog(str(CAPTURES / f"{name}.keylog"))))
    texts = [t.get_text() for t in keyed.axes.texts if t.get_gid() == "label:lane"]
    assert sum("(TLS)" in t for t in texts) == 3 and any("main (TLS)" in t for t in texts), texts
    assert not any("(TLS)" in " ".join(_lane_labels("multifd4-postcopy-preempt-11.1", b.client))
                   for b in timeline("multifd4-postcopy-preempt-11.1").lanes)
