"""`make book` with a failing chapter: every other page is written, the failure is reported."""

import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
title: Tiny
only_build_toc_files: true
exclude_patterns: [_build]
execute:
  execute_notebooks: cache
  raise_on_error: false
  timeout: 60
"""
TOC = """\
format: jb-book
root: intro
chapters:
  - file: good
  - file: bad
  - file: status
"""


def _notebook(path: Path, *sources: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {path.stem}")])
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_a_failing_chapter_does_not_cost_the_other_pages(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    (book / "_config.yml").write_text(CONFIG)
    (book / "_toc.yml").write_text(TOC)
    (book / "intro.md").write_text("# Intro\n\nA tiny book.\n")
    (book / "status.md").write_text("# Status\n\n```{nb-exec-table}\n```\n")
    _notebook(book / "good.ipynb", "print('good chapter ran')")
    _notebook(book / "bad.ipynb", "print('before the error')", "raise ValueError('deliberate failure')", "print('never')")
    for attempt in ("first build", "rebuild, nothing changed"):
        run = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "build_book.py"), str(book)], capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 1, (attempt, run.stdout[-3000:] + run.stderr[-3000:])
        assert "failed to execute" in run.stdout and "- bad.ipynb" in run.stdout, attempt
        assert "- good.ipynb" not in run.stdout, attempt
    html = book / "_build" / "html"
    for page in ("intro", "good", "bad", "status"):
        assert (html / f"{page}.html").exists(), page
    assert "good chapter ran" in (html / "good.html").read_text()
    bad = (html / "bad.html").read_text()
    assert "before the error" in bad and "ValueError" in bad and "deliberate failure" in bad
    assert bad.count('class="cell_output') == 2  # the print and the traceback; the next cell never ran
    rows = (html / "status.html").read_text().split("<tr")
    assert any("bad" in row and "❌" in row for row in rows)
    assert not any("good" in row and "❌" in row for row in rows)
