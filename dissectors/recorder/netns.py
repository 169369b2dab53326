# SPDX-License-Identifier: GPL-2.0-or-later
"""A real network path between two network namespaces, through a third one in the middle.

::

    [source ns]  eth 198.18.0.1/15 ==veth== A [middle ns] B ==veth== eth 198.18.0.2/15  [destination ns]
                                          (delay_relay.py bridges A <-> B in userspace)

Every name carries a per-run token (``msk<pid>-<token>-src`` and so on), the addresses come from the
benchmarking range 198.18.0.0/15 and exist only inside these namespaces: nothing touches the host's
interfaces. ``NetnsPath`` is a context manager; leaving it (normally, on an error, on KeyboardInterrupt or
on SIGTERM while it is open in the main thread) kills whatever still runs in its namespaces and deletes
them. Segmentation and checksum offloads are turned off on every veth end (with ``ethtool`` when it is
installed, else with the same ioctls from Python inside the namespace), so each frame on the path is one
wire-sized Ethernet frame with its checksums filled in, as the relay needs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

SRC_ADDR = "198.18.0.1"
DST_ADDR = "198.18.0.2"
PREFIX_LEN = 15
NS_PREFIX = "msk"
_NS_NAME = re.compile(rf"^{NS_PREFIX}(\d+)-[0-9a-f]+-(src|mid|dst)$")

# Legacy ethtool "set" commands (linux/ethtool.h); the kernel maps them onto netdev features for any device.
ETHTOOL_OFFLOADS = {
    "tx-checksumming": 0x00000017,  # ETHTOOL_STXCSUM
    "scatter-gather": 0x00000019,  # ETHTOOL_SSG
    "tcp-segmentation-offload": 0x0000001F,  # ETHTOOL_STSO
    "generic-segmentation-offload": 0x00000024,  # ETHTOOL_SGSO
    "generic-receive-offload": 0x0000002C,  # ETHTOOL_SGRO
}
_ETHTOOL_K = {
    "tx-checksumming": "tx",
    "scatter-gather": "sg",
    "tcp-segmentation-offload": "tso",
    "generic-segmentation-offload": "gso",
    "generic-receive-offload": "gro",
}
SIOCETHTOOL = 0x8946


class NetnsProblem(Exception):
    """A namespace, veth or address could not be set up (``ip`` missing, not root, ...)."""


def ip_tool() -> str:
    path = shutil.which("ip")
    if path is None:
        raise NetnsProblem("the ip command (iproute2) is not installed")
    return path


def _run(args: list[str], *, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsProblem(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def set_offloads_off_ioctl(ifname: str) -> dict[str, str]:
    """Turn the offloads off on ``ifname`` in *this* process's namespace via SIOCETHTOOL."""
    import ctypes

    done: dict[str, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for feature, cmd in ETHTOOL_OFFLOADS.items():
            value = ctypes.create_string_buffer(struct.pack("II", cmd, 0), 8)  # struct ethtool_value
            ifreq = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(value)) + bytes(16)
            try:
                fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
                done[feature] = "off"
            except OSError as exc:
                done[feature] = f"error: {exc.strerror}"
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    proc = _run([ip_tool(), "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def sweep_stale() -> list[str]:
    """Delete migshark namespaces left behind by a recorder that was killed hard (its pid is gone)."""
    removed = []
    for ns in list_namespaces():
        m = _NS_NAME.match(ns)
        if m and not _alive(int(m.group(1))):
            _delete_namespace(ns)
            removed.append(ns)
    return removed


def _namespace_pids(ns: str) -> list[int]:
    proc = _run([ip_tool(), "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _delete_namespace(ns: str) -> None:
    """Stop what still runs in ``ns`` (only processes this recorder started there), then delete it."""
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
        pids = [p for p in _namespace_pids(ns) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
    _run([ip_tool(), "netns", "del", ns], check=False)


@dataclass
class NetnsPath:
    """Three namespaces and two veth pairs; use as ``with NetnsPath() as path: ...``."""

    token: str = field(default_factory=lambda: secrets.token_hex(3))
    src_addr: str = SRC_ADDR
    dst_addr: str = DST_ADDR
    prefix_len: int = PREFIX_LEN
    mtu: int = 1500
    created: list[str] = field(default_factory=list)
    offloads: dict[str, dict[str, str]] = field(default_factory=dict)
    offload_method: str = ""

    def __post_init__(self) -> None:
        base = f"{NS_PREFIX}{os.getpid()}-{self.token}"
        self.src_ns, self.mid_ns, self.dst_ns = f"{base}-src", f"{base}-mid", f"{base}-dst"
        t = self.token
        # veth names: 15 characters at most; the token keeps them unique per run as well
        self.src_if, self.mid_src_if = f"ms{t}s", f"ms{t}a"
        self.dst_if, self.mid_dst_if = f"ms{t}d", f"ms{t}b"
        self._old_handlers: dict[int, Any] = {}

    # -- the command prefixes the recorder puts in front of QEMU and tcpdump --------------------------
    @staticmethod
    def exec_prefix(ns: str) -> list[str]:
        return [ip_tool(), "netns", "exec", ns]

    @property
    def src_prefix(self) -> list[str]:
        return self.exec_prefix(self.src_ns)

    @property
    def dst_prefix(self) -> list[str]:
        return self.exec_prefix(self.dst_ns)

    @property
    def mid_prefix(self) -> list[str]:
        return self.exec_prefix(self.mid_ns)

    def describe(self) -> dict[str, Any]:
        return {
            "namespaces": {"source": self.src_ns, "middle": self.mid_ns, "destination": self.dst_ns},
            "interfaces": {
                "source": self.src_if,
                "middle_to_source": self.mid_src_if,
                "middle_to_destination": self.mid_dst_if,
                "destination": self.dst_if,
            },
            "addresses": {"source": self.src_addr, "destination": self.dst_addr, "prefix_len": self.prefix_len},
            "mtu": self.mtu,
            "offloads_off": {"method": self.offload_method, "interfaces": self.offloads},
        }

    # -- set-up and teardown --------------------------------------------------------------------------
    def __enter__(self) -> NetnsPath:
        if os.geteuid() != 0:
            raise NetnsProblem("network namespaces need root")
        self._install_signal_handlers()
        try:
            self.setup()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.teardown()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):
                self._old_handlers[sig] = signal.signal(sig, on_signal)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        self._old_handlers.clear()

    def setup(self) -> None:
        ip = ip_tool()
        for ns in (self.src_ns, self.mid_ns, self.dst_ns):
            _run([ip, "netns", "add", ns])
            self.created.append(ns)
        # Created from inside the middle namespace, the peer put straight into its own namespace: no
        # interface ever exists in the host's namespace.
        _run([ip, "-n", self.mid_ns, "link", "add", self.mid_src_if, "type", "veth",
              "peer", "name", self.src_if, "netns", self.src_ns])
        _run([ip, "-n", self.mid_ns, "link", "add", self.mid_dst_if, "type", "veth",
              "peer", "name", self.dst_if, "netns", self.dst_ns])
        ends = [(self.src_ns, self.src_if), (self.mid_ns, self.mid_src_if), (self.mid_ns, self.mid_dst_if),
                (self.dst_ns, self.dst_if)]
        for ns, ifname in ends:
            # no IPv6 link-local address, so no router solicitations or MLD reports on the path
            _run([ip, "-n", ns, "link", "set", "dev", ifname, "mtu", str(self.mtu), "addrgenmode", "none"])
        self._offloads_off(ends)
        _run([ip, "-n", self.src_ns, "addr", "add", f"{self.src_addr}/{self.prefix_len}", "dev", self.src_if])
        _run([ip, "-n", self.dst_ns, "addr", "add", f"{self.dst_addr}/{self.prefix_len}", "dev", self.dst_if])
        for ns, ifname in ends:
            extra = ["promisc", "on"] if ns == self.mid_ns else []
            _run([ip, "-n", ns, "link", "set", "dev", ifname, "up", *extra])
        for ns in (self.src_ns, self.dst_ns):
            _run([ip, "-n", ns, "link", "set", "dev", "lo", "up"])

    def _offloads_off(self, ends: list[tuple[str, str]]) -> None:
        ethtool = shutil.which("ethtool")
        self.offload_method = "ethtool -K" if ethtool else "SIOCETHTOOL ioctl (python, inside the namespace)"
        for ns, ifname in ends:
            if ethtool:
                args = [f for feat in ETHTOOL_OFFLOADS for f in (_ETHTOOL_K[feat], "off")]
                proc = _run([*self.exec_prefix(ns), ethtool, "-K", ifname, *args], check=False)
                self.offloads[ifname] = {f: "off" if proc.returncode == 0 else proc.stderr.strip()
                                         for f in ETHTOOL_OFFLOADS}
            else:
                proc = _run([*self.exec_prefix(ns), sys.executable, "-m", "dissectors.recorder.netns",
                             "offloads-off", ifname], check=False)
                if proc.returncode != 0:
                    raise NetnsProblem(f"turning offloads off on {ifname} failed: {proc.stderr.strip()}")
                self.offloads[ifname] = dict(line.split("=", 1) for line in proc.stdout.split())
        # Without TSO/GSO the stack should never build a super-frame; cap the GSO size anyway.
        for ns, ifname in ends:
            _run([ip_tool(), "-n", ns, "link", "set", "dev", ifname, "gso_max_size", str(self.mtu)], check=False)

    def teardown(self) -> None:
        try:
            for ns in reversed(self.created):
                _delete_namespace(ns)
            self.created.clear()
        finally:
            self._restore_signal_handlers()

    def exists(self) -> bool:
        names = set(list_namespaces())
        return any(ns in names for ns in (self.src_ns, self.mid_ns, self.dst_ns))


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dissectors.recorder.netns")
    sub = parser.add_subparsers(dest="cmd", required=True)
    off = sub.add_parser("offloads-off", help="turn offloads off on interfaces of this namespace (ioctl)")
    off.add_argument("ifname", nargs="+")
    sub.add_parser("sweep", help="delete namespaces left by a recorder that no longer runs")
    args = parser.parse_args(argv)
    if args.cmd == "offloads-off":
        bad = False
        for ifname in args.ifname:
            for feature, state in set_offloads_off_ioctl(ifname).items():
                print(f"{feature}={state.replace(' ', '_')}")
                bad |= state != "off" and feature != "generic-receive-offload"
        return 1 if bad else 0
    for ns in sweep_stale():
        print(f"deleted {ns}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
