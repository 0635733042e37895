"""The book's bibliography labels read like its author-year citations (tools/sphinx_ext)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools" / "sphinx_ext"))

import dlbook_site  # noqa: E402


def test_every_entry_gets_a_unique_author_year_label():
    from pybtex.database import parse_file
    from pybtex.plugin import find_plugin

    dlbook_site._register_bibliography_style()
    bib = parse_file(str(ROOT / "book" / "references.bib"))
    entries = find_plugin("pybtex.style.formatting", "dlbook")().format_bibliography(bib).entries
    labels = {e.key: e.label for e in entries}
    assert len(set(labels.values())) == len(labels) == len(bib.entries)
    assert labels["vaswani2017attention"] == "Vaswani et al. 2017"
    for key, label in labels.items():
        year = bib.entries[key].fields["year"]
        assert label.rstrip("ab").endswith(year), (key, label)
