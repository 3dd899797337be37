"""The committed OpenAPI document is the one the server serves."""

from __future__ import annotations

import difflib
import json

from stockade.server.openapi import DOCUMENT, live_schema, render


def test_committed_openapi_matches_the_live_schema() -> None:
    live = render(live_schema())
    committed = DOCUMENT.read_text()
    if live != committed:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(True), live.splitlines(True), "docs/openapi.json", "live"
                )
            )[:60]
        )
        raise AssertionError(
            "the API changed: run 'python -m stockade.server.openapi --write' "
            f"and commit docs/openapi.json\n{diff}"
        )


def test_every_operation_but_the_public_ones_needs_a_key() -> None:
    schema = json.loads(DOCUMENT.read_text())
    assert schema["security"] == [{"apiKey": []}]
    public = {
        path for path, ops in schema["paths"].items() if any(op.get("security") == [] for op in ops.values())
    }
    assert public == {"/health", "/ready", "/metrics"}
    assert "/keys" in schema["paths"] and "/sandboxes/{sandbox_id}/files" in schema["paths"]
