# SPDX-License-Identifier: GPL-2.0-or-later
"""QEMU 11.1 in a chroot: command prefix, path translation, mounts, work directory, 11.1 scenarios.

No QEMU needed: the root is a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from dissectors.recorder import add_arguments
from dissectors.recorder.chroot import (
    BINARY,
    NEEDED_MOUNTS,
    check_root,
    chroot_install,
    missing_mounts,
    stage_kernel,
    work_parent,
)
from dissectors.recorder.qemus import EnvironmentProblem, GuestSpec, QemuInstall, qemu_command, qemu_install
from dissectors.recorder.scenarios import SCENARIOS


def _mounts(root: Path, names: tuple[str, ...] = NEEDED_MOUNTS) -> str:
    lines = ["/dev/sda1 / ext4 rw 0 0"]
    lines += [f"x {root.resolve()}/{n} x rw 0 0" for n in names]
    return "\n".join(lines) + "\n"


def test_chroot_install_prefix_and_paths(tmp_path: Path) -> None:
    inst = chroot_install("11.1", tmp_path)
    argv0 = inst.argv0()
    assert argv0[0].endswith("chroot") and argv0[1:] == [str(tmp_path), BINARY]
    assert inst.binary == tmp_path / "usr/bin/qemu-system-x86_64"
    assert inst.qemu_path(tmp_path / "tmp/migshark-rec-x/source.qmp") == "/tmp/migshark-rec-x/source.qmp"
    assert inst.qemu_path(tmp_path) == "/"
    with pytest.raises(EnvironmentProblem, match="outside the root"):
        inst.qemu_path(Path("/etc/passwd"))


def test_host_install_paths_untranslated() -> None:
    inst = QemuInstall("7.2", Path("/usr/bin/qemu-system-x86_64"))
    assert inst.argv0() == ["/usr/bin/qemu-system-x86_64"]
    assert inst.qemu_path(Path("/tmp/a/b.qmp")) == "/tmp/a/b.qmp"


def test_qemu_command_uses_in_root_paths_and_composes_with_a_wrapper(tmp_path: Path) -> None:
    inst = chroot_install("11.1", tmp_path)
    work = tmp_path / "tmp" / "migshark-rec-1"
    guest = GuestSpec(work / "guest.elf", "fill=1", 32, "pc-i440fx-7.2")
    cmd = qemu_command(
        inst, guest, qmp_socket=work / "d.qmp", serial_log=work / "d.serial", incoming=True,
        tls_dir=work / "tls", name="migshark-destination",
    )
    assert cmd[:3] == inst.argv0()
    joined = " ".join(cmd[3:])
    assert str(tmp_path) not in joined
    assert "unix:/tmp/migshark-rec-1/d.qmp,server=on,wait=off" in cmd
    assert "file:/tmp/migshark-rec-1/d.serial" in cmd
    assert cmd[cmd.index("-kernel") + 1] == "/tmp/migshark-rec-1/guest.elf"
    assert any("dir=/tmp/migshark-rec-1/tls,endpoint=server" in a for a in cmd)
    assert cmd[-2:] == ["-incoming", "defer"]
    # A network-namespace wrapper goes in front of the whole command line.
    wrapped = dataclasses.replace(inst, prefix=("ip", "netns", "exec", "ns-dst", *inst.prefix))
    assert wrapped.argv0()[:5] == ["ip", "netns", "exec", "ns-dst", inst.prefix[0]]
    assert wrapped.argv0()[5:] == [str(tmp_path), BINARY]


def test_qemu_install_11_1_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGSHARK_TRIXIE_ROOT", str(tmp_path))
    inst = qemu_install("11.1")
    assert inst.root == tmp_path and inst.name == "11.1"
    with pytest.raises(EnvironmentProblem, match="install-qemu-11.sh"):
        inst.check()
    with pytest.raises(EnvironmentProblem, match="known: 7.2, 10.0, 11.1"):
        qemu_install("9.9")


def test_missing_mounts(tmp_path: Path) -> None:
    assert missing_mounts(tmp_path, _mounts(tmp_path)) == []
    assert missing_mounts(tmp_path, _mounts(tmp_path, ("proc",))) == ["dev", "sys"]
    assert missing_mounts(tmp_path, "") == list(NEEDED_MOUNTS)


def test_check_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = chroot_install("11.1", tmp_path)
    with pytest.raises(EnvironmentProblem, match="not found"):
        check_root(inst)
    inst.binary.parent.mkdir(parents=True)
    inst.binary.write_text("")
    monkeypatch.setattr("dissectors.recorder.chroot.missing_mounts", lambda root: ["proc"])
    with pytest.raises(EnvironmentProblem, match="proc not mounted"):
        check_root(inst)
    monkeypatch.setattr("dissectors.recorder.chroot.missing_mounts", lambda root: [])
    check_root(inst)


def test_work_parent_and_stage_kernel(tmp_path: Path) -> None:
    host = QemuInstall("7.2", Path("/usr/bin/qemu-system-x86_64"))
    assert work_parent([host, host]) is None
    root = tmp_path / "root"
    parent = work_parent([host, chroot_install("11.1", root)])
    assert parent == root / "tmp" and parent.is_dir()
    with pytest.raises(EnvironmentProblem, match="different roots"):
        work_parent([chroot_install("11.1", root), chroot_install("11.1", tmp_path / "other")])
    kernel = tmp_path / "k.elf"
    kernel.write_bytes(b"\x7fELF")
    staged = stage_kernel(kernel, parent)
    assert staged == parent / "k.elf" and staged.read_bytes() == b"\x7fELF"


def test_11_1_scenarios_machine_types() -> None:
    assert SCENARIOS["precopy-11.1"].machine == "pc"
    assert SCENARIOS["multifd4-10.0-to-11.1"].machine == "pc-i440fx-10.0"
    # Numeric, not string, comparison: "11.1" < "7.2" as strings.
    assert SCENARIOS["holdback-preempt-7.2-to-11.1"].machine == "pc-i440fx-7.2"
    mp = SCENARIOS["multifd4-postcopy-preempt-11.1"]
    assert mp.multifd == 4 and mp.postcopy and mp.preempt and mp.postcopy_after_s <= 0.1
    hold = SCENARIOS["holdback-preempt-7.2-to-11.1"]
    assert (hold.src, hold.dst, hold.hold_back, hold.expect) == ("7.2", "11.1", "main", "stalled")
    for name, sc in SCENARIOS.items():
        if "11.1" in (sc.src, sc.dst):
            assert "11.1" in name and sc.lab_note   # ...-11.1, or a downward 11.1-to-X


def test_command_accepts_11_1() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--scenario", "precopy-7.2", "--src-qemu", "11.1", "--dst-qemu", "11.1"])
    assert (args.src_qemu, args.dst_qemu) == ("11.1", "11.1")


def test_warnings_are_not_destination_errors() -> None:
    pytest.importorskip("qemu.qmp")
    from dissectors.recorder.driver import is_destination_error

    warning = (
        "qemu-system-x86_64: warning: Machine type 'pc-i440fx-7.2' is deprecated: machines more than 3 years "
        "old are subject to deletion after 6 years"
    )
    assert not is_destination_error(warning)
    assert is_destination_error("qemu-system-x86_64: Failed to peek at channel")
    assert is_destination_error("qemu-system-x86_64: Not a migration stream")


class _HungQmp:
    """A QMP client whose commands never answer."""

    async def execute(self, command: str, arguments: Any = None) -> Any:
        await asyncio.sleep(3600)


class _Running:
    returncode = None

    def poll(self) -> None:
        return None


def test_hung_qmp_times_out_then_waits_briefly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("qemu.qmp")
    from dissectors.recorder import side as side_mod

    monkeypatch.setattr(side_mod, "QMP_TIMEOUT_S", 0.2)
    monkeypatch.setattr(side_mod, "HUNG_QMP_TIMEOUT_S", 0.05)
    s = side_mod.QemuSide("destination", chroot_install("11.1", tmp_path), [], tmp_path, tmp_path / "d.qmp")
    s.qmp = _HungQmp()  # type: ignore[assignment]
    s.proc = _Running()  # type: ignore[assignment]

    async def go() -> tuple[str | None, str | None]:
        return await s.migration_status(), await s.migration_status()

    assert asyncio.run(go()) == (None, None)
    assert s.qmp_hung and s.qmp_timeouts == 2
    assert [e["error"] for e in s.qmp_log] == [
        "timeout: no QMP answer within 0.2 s",
        "timeout: no QMP answer within 0.05 s",
    ]
