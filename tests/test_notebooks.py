"""Chapter hygiene: .py/.ipynb pairs agree, every chapter has the skeleton, the toc lists them all."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def cells(nb) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source, sorted(c.metadata.get("tags", []))) for c in nb.cells]


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks/NN_slug.py found"


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_pair_has_identical_cells(py: Path):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run  jupytext --to ipynb {py.relative_to(ROOT)}"
    from_py = jupytext.read(py)
    committed = nbformat.read(ipynb, as_version=4)
    assert cells(from_py) == cells(committed), (
        f"{ipynb.name} differs from {py.name}: run  jupytext --to ipynb {py.relative_to(ROOT)}"
    )


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(py: Path):
    nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{py.with_suffix('.ipynb').name}: cells {dirty} carry outputs; strip them"


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_skeleton(py: Path):
    nb = jupytext.read(py)
    code = [c for c in nb.cells if c.cell_type == "code"]
    title = nb.cells[0].source
    number = int(py.stem[:2])
    assert re.search(rf"^# {number}\. \S", title, re.M), f"{py.name}: first cell must hold '# {number}. Title'"
    url = CONFIG["repository"]["url"]
    assert f"git+{url}" in code[0].source and "google.colab" in code[0].source, (
        f"{py.name}: the first code cell must install from the repository in _config.yml ({url})"
    )
    assert any("dlbook.setup(" in c.source for c in code[:3]), f"{py.name}: call dlbook.setup() in the imports cell"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{py.name}: needs exactly one cell tagged 'parameters'"
    assert 'profile = os.environ.get("DLBOOK_PROFILE", "full")' in params[0].source
    assert re.search(r"dlbook\.by_profile\(\s*profile", py.read_text()), f"{py.name}: sizes come from dlbook.by_profile"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for section in ("## Summary", "## Exercises", "## Further reading"):
        assert section in text, f"{py.name}: missing '{section}'"
    n_exercises = len(re.findall(r"^:::\{exercise\}", text, re.M))
    assert 3 <= n_exercises <= 6, f"{py.name}: {n_exercises} exercises, the book wants 3 to 6"


def _toc_files(entries) -> list[str]:
    files = []
    for entry in entries:
        if "file" in entry:
            files.append(entry["file"])
        files += _toc_files(entry.get("sections", []))
        for part in entry.get("parts", []):
            files += _toc_files(part.get("chapters", []))
    return files


def test_toc_lists_every_chapter_once():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = _toc_files([{"file": toc["root"]}, {"parts": toc.get("parts", [])}])
    assert len(files) == len(set(files))
    listed = {f for f in files if f.startswith("notebooks/")}
    assert listed == {f"notebooks/{p.stem}" for p in CHAPTERS}
    for f in files:
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".py", ".ipynb")), f"_toc.yml: {f} not found"


MISTYPED_MARKER = re.compile(r"^#\s*%(?!%)|^#%%|^# %%%")


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_cell_markers_are_well_formed(py: Path):
    """A mistyped cell marker (``# %`` for ``# %%``) silently folds code into the cell above."""
    bad = [f"{i}: {line}" for i, line in enumerate(py.read_text().splitlines(), 1) if MISTYPED_MARKER.match(line)]
    assert not bad, f"{py.name}: mistyped cell markers (write '# %%'):\n" + "\n".join(bad)


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_code_lines_fit_the_rendered_column(py: Path):
    """Code cells keep to 88 characters a line: what the rendered page shows without a cut."""
    wide, in_markdown = [], False
    for number, line in enumerate(py.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("# %%"):
            in_markdown = "[markdown]" in line
        elif not in_markdown and len(line) > 88:
            wide.append(f"line {number}: {len(line)} characters")
    assert not wide, f"{py.name}: code lines wider than 88 characters: {wide}"
