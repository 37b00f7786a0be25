"""Rewrite tests/golden/expected.json (only for an intended output change), or dump the outputs.

    PYTHONPATH=src python -m tests.golden.update            # rewrite the digests
    PYTHONPATH=src python -m tests.golden.update --dump DIR # write each case's output to DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .cases import EXPECTED, run_all, digest


def main(argv: list[str]) -> int:
    outputs = run_all()
    if argv[:1] == ["--dump"] and len(argv) == 2:
        d = Path(argv[1])
        d.mkdir(parents=True, exist_ok=True)
        for name, blob in outputs.items():
            (d / name).write_bytes(blob)
        return 0
    if argv:
        print("usage: python -m tests.golden.update [--dump DIR]", file=sys.stderr)
        return 2
    EXPECTED.write_text(json.dumps({n: digest(b) for n, b in outputs.items()}, indent=1,
                                   sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
