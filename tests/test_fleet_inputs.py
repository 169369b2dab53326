"""Which captures a fleet run reads (paths, directories, globs, lists, fsspec URLs) and the serial task on
them: no cluster here (tests/test_fleet.py has one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dissectors.analysis.judge import Options
from dissectors.fleet.inputs import CaptureInput, discover, largest_first, read_list
from dissectors.fleet.rows import mask
from dissectors.fleet.task import analyse_capture

CORPUS = Path(__file__).resolve().parent.parent / "captures"
TLS = "multifd-tls-11.1"


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "host-a").mkdir()
    (tmp_path / "host-b" / "deep").mkdir(parents=True)
    for name in (f"{TLS}.pcap.gz", f"{TLS}.keylog"):
        shutil.copy(CORPUS / name, tmp_path / "host-a" / name)
    shutil.copy(CORPUS / "precopy-7.2.pcap.gz", tmp_path / "host-b" / "deep" / "precopy-7.2.pcap.gz")
    (tmp_path / "host-b" / "notes.txt").write_text("not a capture")
    return tmp_path


def test_directories_are_searched_recursively_with_keylogs_beside(tree):
    items = discover([str(tree)])
    assert [Path(i.url).name for i in items] == [f"{TLS}.pcap.gz", "precopy-7.2.pcap.gz"]
    assert items[0].keylog == str(tree / "host-a" / f"{TLS}.keylog") and items[1].keylog is None
    assert all(i.size == Path(i.url).stat().st_size and i.problem is None for i in items)


def test_globs_duplicates_and_missing_names(tree):
    items = discover([str(tree / "*" / "**" / "*.pcap.gz"), str(tree / "host-b"), str(tree / "nope.pcap"),
                      str(tree / "none-*.pcap"), f"file://{tree / 'host-a' / TLS}.pcap.gz"])
    names = [(Path(i.url).name, i.problem) for i in items]
    assert names == [(f"{TLS}.pcap.gz", None), ("precopy-7.2.pcap.gz", None), ("nope.pcap", "no such file"),
                     ("none-*.pcap", "no file matches this pattern")]
    assert [Path(i.url).name for i in largest_first(items)][0] == max(
        (i.size, Path(i.url).name) for i in items)[1]


def test_list_file_skips_comments_and_blanks(tmp_path):
    listing = tmp_path / "l.txt"
    listing.write_text("# hosts\n/a.pcap\n\n  s3://b/c.pcap.gz  \n")
    assert read_list(str(listing)) == ["/a.pcap", "s3://b/c.pcap.gz"]


def test_unreadable_inputs_become_error_rows(tree):
    (rows,) = [analyse_capture(i) for i in discover([str(tree / "nope.pcap")])]
    assert rows[0]["status"] == "error" and rows[0]["error"].endswith("nope.pcap: no such file")
    bad_keylog = tree / "host-a" / f"{TLS}.keylog"
    bad_keylog.write_text("not a key log line\n")
    (row, *_) = analyse_capture(discover([str(tree / "host-a")])[0])
    assert row["status"] == "error" and "NSS key log" in row["error"]


def test_fsspec_urls_stream_and_find_their_keylog(tree):
    """memory:// is a real fsspec filesystem: the captures are read through it as a stream, and the rows
    equal those of the same files read locally (decrypted with the key log beside them)."""
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for p in tree.rglob("*"):
        if p.is_file():
            fs.pipe(f"/fleet-test/{p.relative_to(tree)}", p.read_bytes())
    try:
        remote = discover(["memory:///fleet-test/**/*.pcap*"])
        local = discover([str(tree)])
        assert [i.url.rsplit("/", 1)[1] for i in remote] == [Path(i.url).name for i in local]
        assert remote[0].keylog == f"memory:///fleet-test/host-a/{TLS}.keylog"
        for r, lc in zip(remote, local, strict=True):
            got, want = analyse_capture(r, Options()), analyse_capture(lc, Options())
            skip = {"capture", "first_warning", "seconds"}
            assert [{k: v for k, v in x.items() if k not in skip} for x in got] == \
                   [{k: v for k, v in x.items() if k not in skip} for x in want]
            assert all(x["capture"] == r.url for x in got)
        assert got[0]["status"] == "completed"
        assert analyse_capture(remote[0])[0]["tls_decrypted"] == "3/3"
        missing = discover(["memory:///fleet-test/none.pcap"])
        assert missing[0].problem == "no such file"
    finally:
        fs.rm("/fleet-test", recursive=True)


def test_signatures_do_not_depend_on_addresses_times_or_counts():
    a = mask("main channel reached EOF at 1795633669.500683 from 127.0.0.1:4444; channel 3; a 7.2 destination")
    b = mask("main channel reached EOF at 1795633700.1 from [::1]:5555; channel 2; a 7.2 destination")
    assert a == b == "main channel reached EOF at T from ADDR; channel N; a 7.2 destination"


def test_every_column_is_documented():
    from dissectors.fleet.rows import COLUMNS

    doc = (Path(__file__).resolve().parent.parent / "docs" / "report-schema.md").read_text()
    section = doc.split("## `migshark fleet`", 1)[1].split("\n## ", 1)[0]
    for name, kind, _ in COLUMNS:
        assert f"| `{name}` | {kind} |" in section, name


def test_a_given_qemu_version_is_the_destination_generation_in_the_summary():
    from dissectors.fleet.summary import render_summary

    (item,) = discover([str(CORPUS / "holdback-multifd-7.2.pcap.gz")])
    rows = analyse_capture(item, Options(qemu_version="7.2"))
    assert {(r["destination_known_by"], r["qemu_version_given"]) for r in rows} == {("given", "7.2")}
    out = render_summary(rows, captures=1, seconds=1.0, engine="serial", table="t.csv")
    assert "7.2 (given)" in out and "misclassified: main taken as multifd (qemu-7.2)" in out


@pytest.mark.parametrize("slots", [1, 2, 8])
def test_tasks_shrink_towards_the_end_of_the_queue(slots):
    """Guided packing: every capture in exactly one task, largest first; each task holds at most its share
    (1 / (1.5 * slots)) of the captures *and* of the bytes still left (a lone capture excepted), so a run of
    small costly captures at the end of the queue is split into single-capture tasks."""
    from dissectors.fleet.runner import batches

    sizes = [400 << 20, 300 << 20, 100 << 20, 70 << 20] + [16 << 20] * 40 + [3 << 20] * 60 + [400_000] * 100
    items = [CaptureInput(f"/c{k}.pcap", s) for k, s in enumerate(sizes)]
    groups = batches(items, slots)
    flat = [j for g in groups for j in g]
    assert sorted(flat) == list(range(len(items)))
    assert [items[j].size for j in flat] == sorted(sizes, reverse=True)
    assert groups[0] == [0] and groups[1] == [1]          # 256 MiB or more: a task alone, first
    left_n, left_b = len(items), sum(sizes)
    for g in groups:
        size = sum(items[j].size for j in g)
        if len(g) > 1:
            assert len(g) <= max(1, left_n // (1.5 * slots)) and size <= left_b // (1.5 * slots)
            assert len(g) <= 32 and size <= 256 << 20
        left_n, left_b = left_n - len(g), left_b - size
    assert [len(g) for g in groups[-2 * slots:]] == [1] * (2 * slots)
    assert len(groups) < len(items) // 2 if slots <= 2 else len(groups) < len(items)
