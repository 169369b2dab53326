"""argparse types for numbers and file names on every command line (the CLI's and the recorder's): a usage
error, exit 2, names the bad value; QEMU or the analysis never sees it."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def seconds(text: str) -> float:
    """A duration in seconds: a number >= 0 ('inf' for never; a negative or NaN threshold was taken as given
    and made every page request a stall, or none)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {text!r}")
    return value


def count(text: str) -> int:
    """A count >= 0 (``dissect --limit``: 0 is no limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a count >= 0: {text!r}")
    return value


def channels(text: str) -> int:
    """A multifd channel count: 0 (off) to 255 (QEMU's multifd-channels is a uint8; a negative count reached
    QMP and failed the recording there)."""
    value = count(text)
    if value > 255:
        raise argparse.ArgumentTypeError(f"not a channel count from 0 to 255: {text!r}")
    return value


def directory_name(text: str) -> Path:
    """A directory name that is not empty (``Path('')`` is the current directory: ``record --out ''``
    wrote there without a word)."""
    if not text:
        raise argparse.ArgumentTypeError("empty directory name")
    return Path(text)


def file_name(text: str) -> str:
    """A file name that is not empty (``analyze ''`` failed with "cannot open" and no name, and ``--plot ''``
    wrote no picture without a word)."""
    if not text:
        raise argparse.ArgumentTypeError("empty file name")
    return text
