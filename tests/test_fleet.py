"""``migshark fleet`` and ``check`` on a real ``distributed.LocalCluster`` (two worker processes): the
table equals serial ``analyze --json`` on every corpus capture, damaged captures become rows, the three
table formats round-trip, and ``check`` through the cluster prints what it prints serially."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import socket
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from dissectors.cli.check import find_captures, sibling  # noqa: E402
from dissectors.cli.main import main  # noqa: E402
from dissectors.fleet.inputs import CaptureInput  # noqa: E402
from dissectors.fleet.rows import NAMES  # noqa: E402
from dissectors.fleet.runner import run_tasks  # noqa: E402
from dissectors.fleet.tables import read_table, write_table  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "captures"
CAPTURES = find_captures([str(CORPUS)])


DASK_HTTP_PORT = 8787          # where Dask's scheduler serves its HTTP routes unless told otherwise
CLUSTER_WARNINGS: list[str] = []   # what Dask warned while the module's cluster started


@contextlib.contextmanager
def dask_port_taken() -> Iterator[None]:
    """Loopback's port 8787 taken, as when another Dask cluster runs on the machine (if one does, it is taken
    already)."""
    with socket.socket() as s:
        with contextlib.suppress(OSError):
            s.bind(("127.0.0.1", DASK_HTTP_PORT))
            s.listen()
        yield


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One real local cluster for the module: two worker processes, one thread each; the scheduler's HTTP
    routes on a free loopback port, as ``runner.local_cluster``'s (Dask's 8787 may be taken by another
    cluster on the machine: Dask then warns "Port 8787 is already in use")."""
    with warnings.catch_warnings(record=True) as said, dask_port_taken():
        warnings.simplefilter("always")
        c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                     silence_logs=logging.CRITICAL)
    CLUSTER_WARNINGS[:] = [str(w.message) for w in said]
    with c:
        yield c.scheduler_address


def test_the_cluster_takes_no_fixed_port(cluster: str) -> None:
    assert not [w for w in CLUSTER_WARNINGS if "already in use" in w]


def run_cli(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def serial_reports() -> dict[str, dict[str, Any]]:
    """``migshark analyze --json`` run one capture at a time, with the key log beside it (as check does)."""
    reports = {}
    for cap in CAPTURES:
        keylog = sibling(cap, ".keylog")
        code, out = run_cli(["analyze", "--json", *(["--keylog", str(keylog)] if keylog.exists() else []), str(cap)])
        assert code in (0, 1), cap
        reports[str(cap)] = json.loads(out)
    return reports


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("damaged")
    junk = d / "junk.pcap"
    junk.write_bytes(b"this is not a capture at all\n" * 10)
    cut = d / "cut.pcap.gz"       # a gzip stream cut in the middle: read in part
    cut.write_bytes((CORPUS / "multifd4-7.2.pcap.gz").read_bytes()[:100_000])
    return {"junk": junk, "cut": cut}


@pytest.fixture(scope="module")
def fleet_run(cluster, damaged, tmp_path_factory) -> tuple[int, str, list[dict[str, Any]]]:
    table = tmp_path_factory.mktemp("fleet") / "fleet.parquet"
    code, out = run_cli(["fleet", str(CORPUS), str(damaged["junk"].parent), "--scheduler", cluster,
                         "-o", str(table)])
    return code, out, read_table(str(table))


def rows_of(rows: list[dict[str, Any]], capture: str) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r["capture"] == capture), key=lambda r: r["migration"])


@pytest.mark.parametrize("cap", CAPTURES, ids=[c.name.split(".pcap")[0] for c in CAPTURES])
def test_table_equals_serial_analyze(cap, fleet_run, serial_reports):
    _, _, rows = fleet_run
    report = serial_reports[str(cap)]
    got = rows_of(rows, str(cap))
    migrations = report["migrations"]
    assert len(got) == len(migrations) > 0
    warnings = report["capture"]["warnings"]
    for row, m in zip(got, migrations, strict=True):
        pol, out, pc = m["policy"], m["outcome"], m["postcopy"]
        assert row["migration"] == m["id"]
        assert row["capture_bytes"] == cap.stat().st_size
        assert (row["status"], row["reason"], row["stalled_for"]) == (out["status"], out["reason"],
                                                                       out.get("stalled_for"))
        assert row["destination"] == m["destination"]
        assert row["relay_side"] == (m.get("relay") or {}).get("side")
        assert (row["start_time"], row["end_time"]) == (m["start_time"], m["end_time"])
        assert (row["policy"], row["policy_why"]) == (pol["name"], pol["why"])
        assert row["source_generation"] == pol["source_generation"]
        assert row["source_evidence"] == pol["evidence"]
        assert row["destination_generation"] == pol["destination_generation"]
        assert row["destination_fits"] == pol["fits_capture"]
        assert row["destination_known_by"] == ("not-judged" if pol["fits_capture"] is None else "behaviour")
        assert row["qemu_version_given"] is None
        roles = Counter(c["role"] for c in m["channels"])
        for role in ("main", "multifd", "preempt", "main-recovery", "tls", "unknown"):
            assert row[f"channels_{role.replace('-', '_')}"] == roles.get(role, 0), role
        assert row["misclassified"] == len(m["misclassifications"])
        assert row["misclassified_channels"] == [f"{x['client']} {x['role']}->{x['assigned_role']}"
                                                 for x in m["misclassifications"]]
        assert row["predicted_failure"] == (m["misclassifications"][0]["failure"] if m["misclassifications"]
                                            else None)
        kinds = Counter(s["kind"] for s in m["stalls"])
        assert row["stalls"] == len(m["stalls"])
        for kind in ("page-request", "preempt-as-main", "peek-blocked", "no-progress"):
            assert row[f"stalls_{kind.replace('-', '_')}"] == kinds.get(kind, 0)
        assert row["longest_stall"] == max((s["duration"] for s in m["stalls"]), default=None)
        assert row["unreadable"] == len(m["unreadable"])
        assert (row["postcopy_page_requests"], row["postcopy_unserved"], row["postcopy_median_latency"],
                row["postcopy_max_latency"]) == (pc["page_requests"], pc["unserved_requests"],
                                                 pc["median_latency"], pc["max_latency"])
        assert row["bytes_to_destination"] == sum(c["bytes_to_server"] for c in m["channels"])
        assert row["bytes_to_source"] == sum(c["bytes_to_client"] for c in m["channels"])
        keylog = report["capture"].get("keylog")
        assert row["tls_decrypted"] == (f"{keylog['decrypted']}/{keylog['tls_connections']}" if keylog else None)
        assert (row["capture_warnings"], row["first_warning"]) == (len(warnings), warnings[0] if warnings else None)
        assert row["error"] is None and row["seconds"] > 0
    # The capture's findings are the sum of its rows'.
    assert sum(r["findings"] for r in got) == report["findings"]


def test_tls_captures_were_decrypted(fleet_run):
    _, _, rows = fleet_run
    tls = [r for r in rows if (CORPUS / Path(r["capture"]).name).exists() and "tls" in Path(r["capture"]).name]
    assert tls and all(r["tls_decrypted"] and r["tls_decrypted"].split("/")[0] != "0" for r in tls)


def test_damaged_captures_are_rows(fleet_run, damaged):
    code, out, rows = fleet_run
    junk = rows_of(rows, str(damaged["junk"]))
    assert len(junk) == 1 and junk[0]["status"] == "error" and junk[0]["migration"] is None
    assert "not a pcap or pcapng file" in junk[0]["error"] and str(damaged["junk"]) in junk[0]["error"]
    cut = rows_of(rows, str(damaged["cut"]))
    assert cut and all(r["capture_warnings"] and "truncated" in r["first_warning"] for r in cut)
    assert all(r["status"] == "incomplete" for r in cut)
    assert code == 1
    assert f"  {'error':<12} {1:>5}  capture(s) that could not be analysed" in out
    assert "read only in part" in out
    assert len({r["capture"] for r in rows}) == len(CAPTURES) + 2


def test_summary_counts_by_outcome_pairs_and_signatures(fleet_run, serial_reports):
    _, out, rows = fleet_run
    counted = [m for rep in serial_reports.values() for m in rep["migrations"]
               if (m.get("relay") or {}).get("side") != "source"]
    for status, n in Counter(m["outcome"]["status"] for m in counted).items():
        assert f"  {status:<12} {n:>5}" in out, status
    assert "By generation pair" in out and "Top failure signatures" in out
    assert "misclassified: main taken as multifd (qemu-7.2)" in out
    example = out.split("misclassified: main taken as multifd (qemu-7.2)", 1)[1].splitlines()[1]
    assert "e.g. " in example and ".pcap" in example


def test_three_formats_round_trip(fleet_run, tmp_path):
    _, _, rows = fleet_run
    assert rows and set(rows[0]) == set(NAMES)
    for suffix in (".csv", ".jsonl", ".parquet"):
        path = tmp_path / f"t{suffix}"
        write_table(rows, str(path))
        assert read_table(str(path)) == rows, suffix


def test_parquet_schema_is_typed(fleet_run, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, _, rows = fleet_run
    write_table(rows, str(tmp_path / "t.parquet"))
    schema = pq.read_schema(str(tmp_path / "t.parquet"))
    assert schema.field("start_time").type == pa.float64()
    assert schema.field("channels_multifd").type == pa.int64()
    assert schema.field("source_evidence").type == pa.list_(pa.string())
    assert schema.field("status").metadata[b"meaning"].startswith(b"outcome")


def test_serial_path_gives_the_same_rows(fleet_run, tmp_path):
    """-j 1 (a plain loop, no Dask) writes the same rows as the cluster, here as CSV."""
    _, _, rows = fleet_run
    picked = [CORPUS / "holdback-multifd-7.2.pcap.gz", CORPUS / "multifd-tls-11.1.pcap.gz"]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# captures\n{picked[1]}\n\n")
    code, _ = run_cli(["fleet", "-j", "1", str(picked[0]), "--from-list", str(listing), "-o", str(tmp_path / "t.csv")])
    assert code == 1                                   # the 7.2 hold-back is a finding
    got = read_table(str(tmp_path / "t.csv"))
    want = [r for p in picked for r in rows_of(rows, str(p))]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(got) == strip(want)


def test_check_on_the_cluster_prints_what_serial_check_prints(cluster, tmp_path):
    serial_code, serial_out = run_cli(["check", str(CORPUS)])
    code, out = run_cli(["check", "--scheduler", cluster, str(CORPUS)])
    assert (code, out) == (serial_code, serial_out) == (0, serial_out)
    assert out.endswith(f"{len(CAPTURES)} passed, 0 failed\n")
    # and a difference is reported through the cluster as well
    for name in ("precopy-7.2.pcap.gz", "precopy-7.2.expected.json"):
        shutil.copy(CORPUS / name, tmp_path / name)
    expected = tmp_path / "precopy-7.2.expected.json"
    expected.write_text(expected.read_text().replace('"completed"', '"failed"', 1))
    code, out = run_cli(["check", "--scheduler", cluster, str(tmp_path)])
    assert code == 1 and "differs" in out and "0 passed, 1 failed" in out


def fail_on_poison(item: CaptureInput) -> str:
    """A task that fails on one capture, escaping the task (as a worker dying under it does: the runner
    gets the exception from the future either way, ``KilledWorker`` then)."""
    if "poison" in item.url:
        raise RuntimeError(f"{item.url}: poisoned")
    return item.url


def test_a_failed_task_costs_only_its_capture(cluster):
    """Small captures share a task; when a task fails, each of its captures is tried again alone and only
    the one that fails again becomes an error."""
    items = [CaptureInput(f"/fleet/{'poison' if i == 5 else 'ok'}-{i}.pcap", 1000) for i in range(16)]
    died = []
    got = run_tasks(fail_on_poison, items, scheduler=cluster,
                    on_error=lambda item, exc: died.append((item.url, repr(exc))) or "error")
    assert died == [("/fleet/poison-5.pcap", "RuntimeError('/fleet/poison-5.pcap: poisoned')")]
    assert got == [("error" if i == 5 else items[i].url) for i in range(16)]
