# SPDX-License-Identifier: GPL-2.0-or-later
"""Build the test guest kernel (guest/guest.c) with gcc into a cache directory, once per source version."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from .qemus import EnvironmentProblem, tool

GUEST_DIR = Path(os.environ.get("MIGSHARK_GUEST_DIR", Path(__file__).resolve().parents[2] / "guest"))
CFLAGS = [
    "-m32",
    "-ffreestanding",
    "-fno-pic",
    "-fno-stack-protector",
    "-nostdlib",
    "-O2",
    "-std=gnu11",
    "-no-pie",
    "-Wl,--build-id=none",
]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "migshark"


def guest_append(fill_mib: int, dirty_pages: int, rate: int) -> str:
    return f"fill={fill_mib} dirty={dirty_pages} rate={rate}"


def build_guest(source_dir: Path = GUEST_DIR, out_dir: Path | None = None) -> Path:
    """Return the path of the built kernel, compiling it if this source has not been built yet."""
    src, lds = source_dir / "guest.c", source_dir / "guest.ld"
    if not src.is_file() or not lds.is_file():
        raise EnvironmentProblem(f"guest sources not found in {source_dir}")
    digest = hashlib.sha256(src.read_bytes() + lds.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:16]
    out_dir = out_dir or cache_dir()
    out = out_dir / f"migshark-guest-{digest}.elf"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    proc = subprocess.run(
        [tool("gcc"), *CFLAGS, "-T", str(lds), "-o", str(tmp), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise EnvironmentProblem(f"building the guest failed (gcc-multilib installed?):\n{proc.stderr}")
    tmp.rename(out)
    return out
