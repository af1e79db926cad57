"""Run every benchmark (``bench/bench_*.py``, each a script with a ``main()``), in order.

Each prints its figures as ``bench <name> <value> <unit>`` lines; other output is fine around
them. ``python bench/run.py NAME...`` runs only the named files (``log``, ``recheck``, ...).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    wanted = set(sys.argv[1:])
    files = sorted(HERE.glob("bench_*.py"))
    if wanted:
        files = [f for f in files if f.stem.removeprefix("bench_") in wanted]
    print(f"# machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    from keeper import _compiled  # after the machine line: a stale build refuses to import

    print(_compiled.describe())
    failed = 0
    for f in files:
        print(f"# {f.stem}", flush=True)
        rc = subprocess.call([sys.executable, str(f)], cwd=HERE.parent)
        if rc != 0:
            print(f"# {f.stem} failed with status {rc}", flush=True)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
