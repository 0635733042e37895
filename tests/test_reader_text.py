"""Reader-facing text states results, not process.

Chapters (their markdown and code comments) and the book's pages must not narrate the project's
development: hosts, sessions, earlier runs, recipe versions, the "bars" that CI checks, or the
profile a number came from. History belongs in CHANGELOG.md. The list is short and maintained
here: add a phrase when a review finds a new way of saying the same thing.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
# the pages, and the measured records the Reproducibility page includes
PAGES = sorted((ROOT / "book").glob("*.md")) + sorted((ROOT / "book" / "measured").glob("*.md"))

#: Phrases that narrate development, everywhere a reader looks.
PROCESS = [
    r"\bthis (host|session|build)\b",
    r"\b(an|the) earlier (run|session|recipe)s?\b",
    r"\bprevious (run|session)s?\b",
    r"\bin our (trials|runs|experience)\b",
    r"\bshared machine\b",
    r"\bfirst built on\b",
    r"\brecipe version",
    r"\bthe issue\b",
    r"\bnot yet re-?run\b",
    r"\bbars?\b",
]
#: Legitimate uses of "bar": plots, progress bars, LaTeX means.
BAR_OK = re.compile(
    r"(progress|error|colou?r|bar-?) ?bars?|bars? (chart|plot|graph|height)s?|\\bar\b|\bbar (below|above)\b"
    r"|\bstacked bars?\b|\beach bar\b|\bthe bars? (show|shows|are|is)\b",
    re.I,
)
#: Only in chapters: the profile a number was produced in is plumbing, not a result.
CHAPTER_ONLY = [r"\bprofile `?full`?", r"`full` profile"]


def _reader_lines(py: Path) -> list[tuple[int, str]]:
    """(line number, text) of every markdown line and code comment of a chapter."""
    nb = jupytext.read(py)
    out = []
    for cell in nb.cells:
        for line in cell.source.splitlines():
            if cell.cell_type == "markdown":
                out.append(line)
            elif "#" in line:
                out.append(line[line.index("#") + 1 :])
    return list(enumerate(out, 1))


def _hits(lines: list[tuple[int, str]], patterns: list[str]) -> list[str]:
    found = []
    for n, line in lines:
        cleaned = BAR_OK.sub("", line)
        for pattern in patterns:
            if re.search(pattern, cleaned, re.I):
                found.append(f"{n}: {line.strip()[:100]}  [{pattern}]")
    return found


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_does_not_narrate_development(py: Path):
    hits = _hits(_reader_lines(py), PROCESS + CHAPTER_ONLY)
    assert not hits, f"{py.name} narrates development:\n" + "\n".join(hits)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_does_not_narrate_development(page: Path):
    lines = list(enumerate(page.read_text().splitlines(), 1))
    hits = _hits(lines, PROCESS)
    assert not hits, f"{page.name} narrates development:\n" + "\n".join(hits)


def test_the_checker_catches_and_spares():
    caught = _hits([(1, "the bar for this chapter is 5"), (2, "on this host it took 3 s")], PROCESS)
    assert len(caught) == 2
    spared = _hits([(1, "a progress bar"), (2, r"$\bar g$ is the mean"), (3, "a bar chart of it")], PROCESS)
    assert spared == []
