"""Validate HAR files against the HAR 1.2 schema written from the spec (tests/data), and read
them with an independent HAR library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from haralyzer import HarEntry, HarParser

SCHEMA_PATH = Path(__file__).parent / "data" / "har-1.2.schema.json"
_VALIDATOR = jsonschema.Draft7Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def assert_valid_har(path: Path) -> dict[str, Any]:
    """The HAR document in ``path``, after checking it is strict JSON and valid HAR 1.2."""
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    errors = sorted(_VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    for entry in doc["log"]["entries"]:
        timings = entry["timings"]
        parts = sum(v for k, v in timings.items() if k != "ssl" and v != -1)
        assert abs(entry["time"] - parts) < 0.01, "entry time is not the sum of its timings"
    # An independent reader of HAR files (haralyzer) must read every entry too.
    parser = HarParser(doc)
    for raw in parser.har_data["entries"]:
        read = HarEntry(raw)
        assert read.request.method and read.request.url and read.startTime is not None
        assert read.response.status == raw["response"]["status"]
    return doc
