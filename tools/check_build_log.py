"""Fail if a `make test` book build executed a chapter instead of rendering what nbval ran.

`make notebooks` executes every chapter once and caches it; the build that follows must find
every chapter in that cache ("Using cached notebook"). A chapter executed again would mean the
cache missed (for example a .py and .ipynb pair that drifted), and make test would pay twice.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def main(log_path: str) -> int:
    log = Path(log_path).read_text(encoding="utf-8", errors="replace")
    executed = re.findall(r"Executing notebook", log)
    cached = re.findall(r"Using cached notebook", log)
    chapters = sorted(Path("notebooks").glob("[0-9][0-9]_*.py"))
    if executed:
        print(f"check_build_log: the build executed {len(executed)} notebook(s) again instead of using the nbval cache")
        return 1
    if len(cached) != len(chapters):
        print(f"check_build_log: {len(cached)} chapters came from the cache, expected {len(chapters)}")
        return 1
    print(f"check_build_log: all {len(chapters)} chapters rendered from the nbval run, none executed twice")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
