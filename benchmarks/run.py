"""Entry point: `python benchmarks/run.py [--quick] [--n N] [--latencies 0,50] ...`.

See benchmarks/README.md for what it measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts benchmarks/ itself on sys.path; the package lives one up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    from benchmarks.suite import main
except ModuleNotFoundError as exc:  # most likely a Python without the project installed
    hint = f"run with the project's virtualenv: .venv/bin/python {__file__}"
    raise SystemExit(f"{exc}; {hint}") from None

if __name__ == "__main__":
    raise SystemExit(main())
