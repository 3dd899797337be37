"""The committed OpenAPI document: ``python -m stockade.server.openapi [--write]``.

Without ``--write``, print the live document; with it, rewrite ``docs/openapi.json``. A unit test
fails when the committed document and the live one differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..engine import EngineConfig
from .app import create_app
from .settings import ServerSettings

DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def live_schema() -> dict[str, Any]:
    """The document the server serves in remote mode (building the app starts nothing)."""
    app = create_app(EngineConfig(data_dir=Path("/nonexistent")), settings=ServerSettings())
    return app.openapi()


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> None:
    text = render(live_schema())
    if "--write" in argv:
        DOCUMENT.write_text(text)
        print(f"wrote {DOCUMENT}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
