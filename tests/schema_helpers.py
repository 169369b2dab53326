"""The JSON Schemas in docs/ (report, watch events, dissect records), loaded once, and a validator whose
failures name the field that broke (``migrations[0].channels[3].order_certain: ...``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCHEMAS = {"report": "report.schema.json", "watch": "watch-event.schema.json",
           "dissect": "dissect-record.schema.json"}


@cache
def schema(name: str) -> dict[str, Any]:
    return json.loads((DOCS / SCHEMAS[name]).read_text())


@cache
def validator(name: str) -> Draft202012Validator:
    registry: Registry = Registry()
    for key in SCHEMAS:
        s = schema(key)
        registry = registry.with_resource(s["$id"], Resource.from_contents(s))
    Draft202012Validator.check_schema(schema(name))
    return Draft202012Validator(schema(name), registry=registry)


def where(path: Any) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _leaves(error: Any) -> Iterator[Any]:
    """The innermost errors: for a ``oneOf`` (an event kind, a nullable object) the branch the value was
    meant for (its ``type`` / ``const`` fit) says which field broke, not 'is not valid under any of the
    given schemas'."""
    if not error.context:
        yield error
        return
    branches: dict[Any, list[Any]] = {}
    for e in error.context:
        branches.setdefault(e.schema_path[0], []).append(e)
    meant = [errs for errs in branches.values()
             if not any((e.validator == "type" and not e.relative_path) or e.validator == "const" for e in errs)]
    if not meant:
        yield error
        return
    for e in min(meant, key=len):
        yield from _leaves(e)


def problems(name: str, document: Any) -> list[str]:
    """Every place ``document`` breaks schema ``name``, as 'field.path: what is wrong'."""
    out = []
    for err in validator(name).iter_errors(document):
        for leaf in _leaves(err):
            out.append(f"{where(leaf.absolute_path)}: {leaf.message}")
    return sorted(set(out))


def assert_valid(name: str, document: Any, label: str) -> None:
    found = problems(name, document)
    assert not found, (f"{label} breaks docs/{SCHEMAS[name]} (update the schema and docs/report-schema.md "
                       f"if the change is meant):\n  " + "\n  ".join(found[:30]))
