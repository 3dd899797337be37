"""Compatibility tests drive a real `stockade serve` (tests/integration/server_harness.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
