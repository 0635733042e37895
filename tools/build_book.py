"""Build the book so that one failing chapter does not cost the reader the others (`make book`).

Runs ``jupyter-book build`` with ``--keep-going``: myst-nb executes every chapter that is not in
the cache yet; ``execute.raise_on_error`` is false in ``_config.yml``, so a chapter whose
execution fails is still rendered, with its outputs up to the error and the error itself, and is
marked as failed in the execution table of the Reproducibility page (``{nb-exec-table}``).
Then this script lists the chapters whose last execution failed (from the build's log and from
the traces myst-nb keeps in the jupyter-cache, so a rebuild still names them) and exits 1 if any
did, or if the build had any other warning, after ``<output>/_build/html`` is written (afresh:
the old pages are removed first, the cache of executed chapters is kept); it exits 2 if no HTML
was written.

    python tools/build_book.py [SOURCE] [--path-output DIR] [jupyter-book options...]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

FAILED = re.compile(r"^(?P<path>.+?): WARNING: Executing notebook failed")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def failed_in_log(log: str) -> list[str]:
    """The source files whose execution failed in this build, in the order it reported them."""
    lines = (ANSI.sub("", line).strip() for line in log.splitlines())
    return list(dict.fromkeys(m.group("path") for line in lines if (m := FAILED.match(line))))


def failed_in_cache(cache_dir: Path) -> list[str]:
    """The source files whose last execution failed, as myst-nb recorded it in the jupyter-cache.

    A rebuild that does not re-read a failed chapter logs nothing about it; its traceback stays
    in the cache's project record until the chapter executes successfully.
    """
    if not (cache_dir / "global.db").exists():
        return []
    from jupyter_cache import get_cache

    cache = get_cache(cache_dir)
    # a chapter executed successfully since (e.g. by `make full`) has its outputs cached: not failed
    return [r.uri for r in cache.list_project_records() if r.traceback and cache.get_cached_project_nb(r.pk) is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", default=".")
    parser.add_argument("--path-output", default=None, help="folder that gets _build/ (default: SOURCE)")
    args, extra = parser.parse_known_args(argv)
    source = Path(args.source).resolve()
    out = Path(args.path_output).resolve() if args.path_output else source
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb), "build", str(source), "-W", "-n", "--keep-going", "--path-output", str(out), *extra]
    html = out / "_build" / "html"
    shutil.rmtree(html, ignore_errors=True)  # a stale index.html must not hide a crash (the cache stays)
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
    log = "".join(lines)
    (out / "_build").mkdir(parents=True, exist_ok=True)
    (out / "_build" / "book.log").write_text(log)
    index = html / "index.html"
    failed = list(dict.fromkeys(failed_in_log(log) + failed_in_cache(out / "_build" / ".jupyter_cache")))
    print()
    if not index.exists():
        print(f"make book: no HTML was written (jupyter-book exited {proc.returncode}); see _build/book.log")
        return 2
    pages = len(list(html.rglob("*.html")))
    print(f"make book: {pages} pages written to {index.parent}")
    if failed:
        print(
            f"make book: {len(failed)} chapter(s) failed to execute; they are rendered up to their error "
            "and marked on the Reproducibility page:"
        )
        for path in failed:
            print(f"  - {Path(path).name}")
    elif proc.returncode != 0:
        print(f"make book: the build had warnings or errors (jupyter-book exited {proc.returncode}); see _build/book.log")
    return 1 if failed or proc.returncode != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
