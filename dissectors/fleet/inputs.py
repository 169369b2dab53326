"""Which captures a fleet run reads: files, directories (recursively), globs, a list file, fsspec URLs.

Each capture is named by the string the user gave (a local path or a URL such as ``s3://bucket/x.pcap``)
with its size (to queue the largest first) and the ``NAME.keylog`` beside it, if there is one (TLS
migrations are decrypted with it, as ``migshark check`` does). A name that matches nothing is kept as an
input with a ``problem``: it becomes an error row, not the end of the run.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".pcap", ".pcapng", ".pcap.gz", ".pcapng.gz")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class CaptureInput:
    url: str                     # local path or fsspec URL, as the table names the capture
    size: int = 0                # bytes on storage (compressed for .gz); 0 when unknown
    keylog: str | None = None    # the NSS key log beside it (NAME.keylog)
    problem: str | None = None   # why it cannot be read (no such file, ...): an error row


def is_url(name: str) -> bool:
    """A fsspec URL (``s3://``, ``gs://``, ``http://``...); ``file://`` counts and is read locally."""
    return bool(_URL.match(name))


def stem(name: str) -> str:
    """``dir/NAME.pcap.gz`` -> ``dir/NAME`` (names hold dots, as in ``precopy-7.2``)."""
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def sibling(capture: str, suffix: str) -> str:
    """``NAME.pcap.gz`` -> ``NAME<suffix>``, for paths and URLs alike."""
    return stem(capture) + suffix


def is_capture_name(name: str) -> bool:
    return name.endswith(SUFFIXES)


def read_list(path: str) -> list[str]:
    """The names in a list file: one per line; blank lines and ``#`` comments skipped."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def discover(specs: Iterable[str]) -> list[CaptureInput]:
    """Every capture named by ``specs`` (each a file, directory, glob or URL), first occurrence kept."""
    out: list[CaptureInput] = []
    seen: set[str] = set()
    for spec in specs:
        found = _remote(spec) if is_url(spec) and not spec.startswith("file://") else _local(
            spec.removeprefix("file://"))
        for item in found:
            key = item.url if is_url(item.url) else os.path.abspath(item.url)
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out


def largest_first(items: list[CaptureInput]) -> list[CaptureInput]:
    """The queue order: largest first, so a long capture does not start last and hold up the end."""
    return sorted(items, key=lambda c: -c.size)


def _local(spec: str) -> list[CaptureInput]:
    if _GLOB.search(spec):
        names = sorted(glob.glob(spec, recursive=True))
        files = [n for n in names if os.path.isfile(n)]
        for d in (n for n in names if os.path.isdir(n)):
            files += _walk(d)
        if not files:
            return [CaptureInput(spec, problem="no file matches this pattern")]
        return [_local_file(n) for n in files]
    if os.path.isdir(spec):
        files = _walk(spec)
        if not files:
            return [CaptureInput(spec, problem=f"no capture ({', '.join(SUFFIXES)}) in this directory")]
        return [_local_file(n) for n in files]
    if not os.path.exists(spec):
        return [CaptureInput(spec, problem="no such file")]
    return [_local_file(spec)]


def _walk(directory: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        out += [os.path.join(root, f) for f in sorted(files) if is_capture_name(f)]
    return out


def _local_file(path: str) -> CaptureInput:
    try:
        size = os.stat(path).st_size
    except OSError:
        size = 0
    keylog = sibling(path, ".keylog")
    return CaptureInput(path, size, keylog if is_capture_name(path) and Path(keylog).is_file() else None)


def _remote(spec: str) -> list[CaptureInput]:
    try:
        import fsspec
    except ImportError:
        return [CaptureInput(spec, problem="reading URLs needs fsspec (pip install 'migshark[fleet]')")]
    try:
        fs, path = fsspec.core.url_to_fs(spec)
        protocol = spec.split("://", 1)[0]
        if _GLOB.search(path):
            paths = sorted(p for p in fs.glob(path) if is_capture_name(p))
        elif fs.isdir(path):
            paths = sorted(p for p in fs.find(path) if is_capture_name(p))
        elif fs.exists(path):
            paths = [path]
        else:
            return [CaptureInput(spec, problem="no such file")]
        if not paths:
            return [CaptureInput(spec, problem="no capture found at this URL")]
        out = []
        for p in paths:
            url = p if is_url(p) else f"{protocol}://{p}"
            info = fs.info(p)
            keylog = sibling(p, ".keylog")
            out.append(CaptureInput(url, int(info.get("size") or 0),
                                    f"{protocol}://{keylog}" if fs.exists(keylog) else None))
        return out
    except ImportError as exc:   # the protocol's own package (s3fs, gcsfs...) is missing
        return [CaptureInput(spec, problem=f"cannot read this URL: {exc}")]
    except (OSError, ValueError) as exc:
        return [CaptureInput(spec, problem=f"cannot list: {exc}")]
