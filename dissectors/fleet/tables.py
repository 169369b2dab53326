"""Write (and read back) the fleet table; the format comes from the file's suffix.

- ``.parquet``: pyarrow, with the schema of ``rows.COLUMNS`` (lists as ``list<string>``);
- ``.csv``: a header row, lists as JSON arrays (their sentences may hold any separator), null as an
  empty field;
- ``.jsonl`` (or ``.ndjson``): one JSON object per row, lists as arrays, null as null.

The output may be a fsspec URL (``s3://bucket/fleet.parquet``) when the package for it is installed.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from dissectors.fleet.inputs import is_url
from dissectors.fleet.rows import COLUMNS, NAMES, TYPES

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class TableError(Exception):
    """The table cannot be written in that format (unknown suffix, pyarrow missing)."""


def table_format(path: str) -> str:
    """``parquet``, ``csv`` or ``jsonl`` from ``path``'s suffix; checks that the writer is installed."""
    for suffix, fmt in FORMATS.items():
        if path.lower().endswith(suffix):
            if fmt == "parquet":
                try:
                    import pyarrow  # noqa: F401
                except ImportError:
                    raise TableError("writing Parquet needs pyarrow (pip install 'migshark[fleet]'); "
                                     "or write .csv / .jsonl") from None
            return fmt
    raise TableError(f"{path}: the table's format comes from its suffix: one of {', '.join(FORMATS)}")


def arrow_schema() -> Any:
    import pyarrow as pa

    kinds = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
             "list": pa.list_(pa.string())}
    return pa.schema([pa.field(name, kinds[kind], nullable=True, metadata={"meaning": meaning})
                      for name, kind, meaning in COLUMNS])


@contextmanager
def _open(path: str, mode: str) -> Iterator[IO[Any]]:
    if is_url(path):
        import fsspec

        with fsspec.open(path, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
    else:
        with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f


def write_table(rows: list[dict[str, Any]], path: str) -> None:
    fmt = table_format(path)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{n: r.get(n) for n in NAMES} for r in rows], schema=arrow_schema())
        with _open(path, "wb") as f:
            pq.write_table(table, f)
    elif fmt == "csv":
        with _open(path, "w") as f:
            w = csv.writer(f)
            w.writerow(NAMES)
            for r in rows:
                w.writerow([_csv_cell(r.get(n)) for n in NAMES])
    else:
        with _open(path, "w") as f:
            for r in rows:
                f.write(json.dumps({n: r.get(n) for n in NAMES}) + "\n")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def read_table(path: str) -> list[dict[str, Any]]:
    """The rows of a table written by ``write_table``, typed as ``rows.COLUMNS`` says."""
    fmt = table_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with _open(path, "rb") as f:
            return pq.read_table(f).to_pylist()
    with _open(path, "r") as f:
        text = f.read()
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [{n: _from_csv(n, v) for n, v in r.items()} for r in csv.DictReader(io.StringIO(text))]


def _from_csv(name: str, value: str) -> Any:
    kind = TYPES[name]
    if value == "" and kind != "list":
        return None
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return value == "True"
    if kind == "list":
        return json.loads(value) if value else None
    return value
