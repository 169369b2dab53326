"""``migshark dissect`` as a user meets it: unknown connections and channel kinds are usage errors naming what
exists, filters that hide every record say so, ``-V`` labels are distinct within a record."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from dissectors.channels.kinds import KINDS
from dissectors.cli.main import main
from dissectors.layers import commands as C
from dissectors.layers import return_path as RP
from dissectors.layers import tls as T
from dissectors.outputs.layer_tree import layer_tree

CORPUS = Path(__file__).resolve().parent.parent / "captures"
PREEMPT = str(CORPUS / "multifd4-postcopy-preempt-11.1.pcap.gz")


def test_unknown_connection_is_a_usage_error_naming_the_connections(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dissect", "-c", "99", PREEMPT]) == 2
    cap = capsys.readouterr()
    assert "no connection 99" in cap.err and "0 (127.0.0.1:58566 -> 127.0.0.1:55605)" in cap.err
    assert "5 (127.0.0.1:58608 -> 127.0.0.1:55605)" in cap.err
    assert "Records per channel" not in cap.out
    assert main(["dissect", "-c", "5", "-c", "10.9.9.9:1", PREEMPT]) == 2
    assert "no connection 10.9.9.9:1" in capsys.readouterr().err


def test_unknown_channel_kind_is_a_usage_error_naming_the_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dissect", "--channel", "bogus", PREEMPT])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: migshark dissect" in err and "invalid choice: 'bogus'" in err
    assert all(k in err for k in ("'main'", "'return-path'", "'multifd'", "'preempt'", "'tls'"))


def test_pages_hidden_on_a_preempt_channel_are_said(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dissect", "-c", "5", PREEMPT]) == 0
    cap = capsys.readouterr()
    assert "preempt        ram.page                 61" in cap.out
    assert "61 RAM page record(s) matched but none is listed" in cap.err and "--pages" in cap.err
    assert main(["dissect", "-c", "5", "--pages", "--limit", "1", PREEMPT]) == 0
    cap = capsys.readouterr()
    assert "ram.page" in cap.out and "note" not in cap.err


def test_a_filter_matching_nothing_names_what_is_there(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dissect", "-c", "0", "-t", "multifd.*", PREEMPT]) == 0
    err = capsys.readouterr().err
    assert "no record matches -t multifd.*" in err and "main, return-path" in err and "rp.req_pages" in err
    assert main(["dissect", "--channel", "tls", PREEMPT]) == 0
    assert "no record matches --channel tls" in capsys.readouterr().err
    assert main(["dissect", "-t", "main.config", str(CORPUS / "multifd-tls-11.1.pcap.gz")]) == 0
    err = capsys.readouterr().err
    assert "carry channel kind(s) tls with record type(s) tls.record (TLS: --keylog FILE decrypts it)" in err


def _trees() -> list[list[str]]:
    """The -V tree of one packet of every layer chain a record can carry (built from the declarations)."""
    pkts = [RP.RpMessage() / RP.RpReqPages(start=0x1000), RP.RpMessage() / RP.RpReqPagesId(block=b"pc.ram"),
            C.Command(cmd=C.MIG_CMD_PACKAGED) / C.CmdPackaged(length=3),
            T.TlsRecordHeader(len=5)]
    pkts += [kind.layer() for kind in KINDS.values() if kind.layer is not None]
    return [layer_tree(p) for p in pkts]


def test_verbose_labels_are_distinct_within_a_record() -> None:
    for tree in _trees():
        labels = Counter(line.split(":")[0].strip() for line in tree if line.startswith("        ") and ":" in line
                         and not line.startswith("            "))
        assert all(n == 1 for n in labels.values()), (tree, labels)


def test_verbose_labels_on_the_corpus_say_which_length(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dissect", "-V", "-t", "rp.req_pages", "--limit", "3",
                 str(CORPUS / "multifd-postcopy-7.2.pcap.gz")]) == 0
    out = capsys.readouterr().out
    assert "        Message length: 12\n" in out and "        Page range length: 4096\n" in out
    assert "Len:" not in out and "Length:" not in out


def test_verbose_tree_of_records_whose_bytes_the_parser_skips(capsys: pytest.CaptureFixture[str]) -> None:
    """A multifd packet and a RAM page record: their trees come from the bytes the frames carried."""
    assert main(["dissect", "-V", "-t", "multifd.packet", "--limit", "1",
                 str(CORPUS / "multifd4-11.1.pcap.gz")]) == 0
    out = capsys.readouterr().out
    assert "packet_num=4 " in out.splitlines()[0]
    for line in ("    multifd RAM packet\n", "        Packet number: 4\n", "        Normal pages: 3\n",
                 "        Zero pages: 125\n", "        Ramblock: pc.ram\n", "        Offsets: [0x0, 0x9000, 0x6000",
                 "    (the tree decodes the record's first 4352 of 13632 bytes)\n"):
        assert line in out, line
    assert main(["dissect", "-V", "--pages", "-t", "ram.page", "--limit", "1",
                 str(CORPUS / "precopy-7.2.pcap.gz")]) == 0
    out = capsys.readouterr().out
    assert "        Flags: PAGE\n        ID length: 6\n        ID string: pc.ram\n    RAM PAGE payload\n" in out
    assert "... (4096 bytes)\n" in out
