"""Same seed, same numbers: run one chapter again in smoke and compare every glued value.

`make test` runs this after `make notebooks`, which left the chapter's first execution in
``_build/test/_build/executed``. The chapter is executed once more here (nbclient, same
profile, same seed) and every value it glues must be identical, except the ones that are
wall-clock measurements by nature (listed below, with the reason).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
CHAPTER = "05_lstm_gru"  # trains three recurrent models from seeds, in seconds
# Glued values that measure time, so legitimately differ between two runs.
TIMING_GLUES: set[str] = set()
GLUE_KEY = "scrapbook"


def glued(nb) -> dict[str, str]:
    values = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get(GLUE_KEY)
            if meta:
                data = out.get("data", {})
                values[meta["name"]] = next((v for k, v in data.items() if k.endswith("text/plain")), None)
    return values


@pytest.fixture(scope="module")
def first_run(request) -> dict[str, str]:
    path = Path(request.config.getoption("--executed-dir")) / f"{CHAPTER}.ipynb"
    if not path.exists():
        pytest.fail(f"{path} missing: run `make notebooks` first (it executes every chapter once)")
    return glued(nbformat.read(path, as_version=4))


def test_glued_numbers_repeat_exactly(first_run):
    assert os.environ.get("DLBOOK_PROFILE") == "smoke"
    nb = nbformat.read(ROOT / "notebooks" / f"{CHAPTER}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    second = glued(nb)
    assert first_run, "the chapter glued nothing: the test would prove nothing"
    assert set(second) == set(first_run)
    differ = {k: (first_run[k], second[k]) for k in first_run if k not in TIMING_GLUES and first_run[k] != second[k]}
    assert not differ, f"glued values changed between two runs with the same seed: {differ}"


def test_comparison_sees_a_change():
    a = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                outputs=[
                    nbformat.v4.new_output(
                        "display_data",
                        data={"application/papermill.record/text/plain": "0.91"},
                        metadata={GLUE_KEY: {"name": "acc", "mime_prefix": "application/papermill.record/"}},
                    )
                ]
            )
        ]
    )
    b = nbformat.from_dict(a)
    b.cells[0].outputs[0].data["application/papermill.record/text/plain"] = "0.92"
    assert glued(a) == {"acc": "0.91"} and glued(a) != glued(b)
