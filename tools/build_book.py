"""Build the book so that one failing chapter does not cost the reader the others (`make book`).

Runs ``jupyter-book build`` with ``--keep-going``: myst-nb executes every chapter that is not in
the cache yet; ``execute.raise_on_error`` is false in ``_config.yml``, so a chapter whose
execution fails is still rendered, with its outputs up to the error and the error itself, and is
marked as failed in the execution table of the Reproducibility page (``{nb-exec-table}``).
Then this script lists the chapters that failed and exits 1 if any did, or if the build had any
other warning, after ``<output>/_build/html`` is written; it exits 2 if no HTML was written.

    python tools/build_book.py [SOURCE] [--path-output DIR] [jupyter-book options...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

FAILED = re.compile(r"^(?P<path>\S+?): WARNING: Executing notebook failed")


def failed_chapters(log: str) -> list[str]:
    """The source files whose execution failed, in the order the build reported them."""
    found = [m.group("path") for line in log.splitlines() if (m := FAILED.match(line.strip()))]
    return list(dict.fromkeys(found))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=".")
    parser.add_argument("--path-output", default=None, help="folder that gets _build/ (default: SOURCE)")
    args, extra = parser.parse_known_args(argv)
    source = Path(args.source).resolve()
    out = Path(args.path_output).resolve() if args.path_output else source
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(source), "-W", "-n", "--keep-going", "--path-output", str(out), *extra]
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
    log = "".join(lines)
    (out / "_build").mkdir(parents=True, exist_ok=True)
    (out / "_build" / "book.log").write_text(log)
    index = out / "_build" / "html" / "index.html"
    failed = failed_chapters(log)
    print()
    if not index.exists():
        print(f"make book: no HTML was written (jupyter-book exited {proc.returncode}); see _build/book.log")
        return 2
    pages = len(list((out / "_build" / "html").rglob("*.html")))
    print(f"make book: {pages} pages written to {index.parent}")
    if failed:
        print(f"make book: {len(failed)} chapter(s) failed to execute; they are rendered up to their error "
              "and marked on the Reproducibility page:")
        for path in failed:
            print(f"  - {Path(path).name}")
    elif proc.returncode != 0:
        print(f"make book: the build had warnings or errors (jupyter-book exited {proc.returncode}); see _build/book.log")
    return 1 if failed or proc.returncode != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
