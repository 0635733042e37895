"""pytest plugin: keep what nbval executed, so the book renders it instead of running it again.

``make test`` runs every chapter once, under nbval (``--nbval-lax``: a cell fails only by
raising, and the chapters' assertion cells are what make them tests). nbval keeps each
cell's outputs only in memory; this plugin writes them back into the notebook and, for every
notebook whose cells all passed, stores it in the jupyter-cache that myst-nb reads when the
book is built with ``execute_notebooks: cache``. The cache matches on the code cells' source,
which the pairing test keeps identical between ``notebooks/NN.py`` and ``notebooks/NN.ipynb``.

Enable with ``-p nbval_capture --nbval-capture=_build/.jupyter_cache``.

It also fails a cell whose stderr shows a Python warning or a message of transformers' logger,
such as its load report (readers should not see noise the text does not discuss: fix it at its
source, or silence it in one place with the reason). A cell whose text discusses such output
carries the tag ``shows-warning``. Other loggers (datasets, torch.distributed) have no common
mark and are not checked.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest

_KEY = pytest.StashKey[dict]()

#: What counts as noise on a line of a cell's stderr: a Python warning (``path:line: SomeWarning:
#: message``, found anywhere in the line, since a progress bar without a description starts with
#: spaces and a warning may follow it on the same line), a message of transformers' logger
#: (``[transformers] ...``: at the default verbosity only warnings and errors reach stderr) or
#: its load report. Lowercase "warning:" (ordinary text) and progress bars do not match.
NOISE = re.compile(r"\b\w*Warning: |\[transformers\] |LOAD REPORT")
#: The cell tag that allows it (the chapter's text discusses the warning shown).
ALLOW_TAG = "shows-warning"


def noise_in(outputs: list, tags: list[str]) -> list[str]:
    """The first noisy line of each stderr output among ``outputs`` (none if ``tags`` allow it).

    Lines are split at ``\\n`` and ``\\r`` alike, so text that a progress bar overwrote is
    checked too; each line is reported whole (up to 200 characters) to say where it came from.
    """
    if ALLOW_TAG in tags:
        return []
    found = []
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            text = "".join(out.get("text", ""))
            noisy = [line.strip() for line in text.splitlines() if NOISE.search(line)]
            if noisy:
                found.append(noisy[0][:200])
    return found


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--nbval-capture",
        metavar="CACHE_DIR",
        default=None,
        help="store notebooks that nbval executed without failure in this jupyter-cache folder",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_KEY] = {}


def _record(item: pytest.Item) -> dict | None:
    if type(item).__name__ != "IPyNbCell" or not item.config.getoption("--nbval-capture"):
        return None
    notebooks = item.config.stash[_KEY]
    return notebooks.setdefault(
        item.parent.nodeid,
        {"file": item.parent, "start": time.perf_counter(), "end": None, "failed": False, "ran": 0},
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    _record(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if type(item).__name__ == "IPyNbCell" and report.when == "call" and report.passed:
        tags = list(item.cell.get("metadata", {}).get("tags", []))
        noise = noise_in(getattr(item, "test_outputs", None) or [], tags)
        if noise:
            report.outcome = "failed"
            report.longrepr = (
                f"cell {item.cell_num} printed warnings on stderr (fix at the source, or tag the "
                f"cell {ALLOW_TAG!r} if the text discusses them): {noise}"
            )
    record = _record(item)
    if record is not None and report.when == "call":
        record["ran"] += 1
        record["end"] = time.perf_counter()
        record["failed"] |= not report.passed
        outputs = getattr(item, "test_outputs", None) or []
        item.cell.outputs = [nbformat.from_dict(dict(o)) for o in outputs]
        item.cell.execution_count = item.cell_num + 1
        for out in item.cell.outputs:
            if out.get("output_type") == "execute_result":
                out["execution_count"] = item.cell_num + 1
    elif record is not None and report.when == "setup" and not report.passed:
        record["failed"] = True
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    cache_dir = session.config.getoption("--nbval-capture")
    if not cache_dir:
        return
    try:  # absent on a bare GPU runner: the executed notebooks and times are still written
        from jupyter_cache import get_cache
        from jupyter_cache.base import CacheBundleIn
    except ImportError:
        cache = None
    else:
        cache = get_cache(cache_dir)
    executed = Path(cache_dir).parent / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    timings_path = executed / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    for record in session.config.stash[_KEY].values():
        nb_file = record["file"]
        nb = nb_file.nb
        source = Path(str(nb_file.fspath))
        n_code = sum(c.cell_type == "code" for c in nb.cells)
        seconds = (record["end"] or time.perf_counter()) - record["start"]
        complete = not record["failed"] and record["ran"] == n_code and record["end"] is not None
        timings[source.stem] = {
            "seconds": round(seconds, 1),
            "status": "passed" if complete else "failed",
            "profile": os.environ.get("DLBOOK_PROFILE", "full"),
        }
        if not complete:
            continue
        nbformat.validate(nb)
        nbformat.write(nb, executed / source.name)
        uri = source.with_suffix(".py") if source.with_suffix(".py").exists() else source
        if cache is not None:
            cache.cache_notebook_bundle(
                CacheBundleIn(nb, str(uri.resolve()), data={"execution_seconds": round(seconds, 2)}),
                check_validity=False,
                overwrite=True,
            )
    timings_path.write_text(json.dumps(timings, indent=2, sort_keys=True))
