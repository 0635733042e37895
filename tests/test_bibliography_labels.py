"""The book's bibliography labels read like its author-year citations (tools/sphinx_ext)."""

from __future__ import annotations

import re
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
        assert re.fullmatch(rf"\S.* {year}[a-z]?", label), (key, label)


def _labels(bibtex: str) -> dict[str, str]:
    from pybtex.database import parse_string
    from pybtex.plugin import find_plugin

    dlbook_site._register_bibliography_style()
    style = find_plugin("pybtex.style.formatting", "dlbook")()
    entries = style.sort(parse_string(bibtex, "bibtex").entries.values())
    return {e.key: label for e, label in zip(entries, style.format_labels(entries), strict=True)}


def test_shared_labels_get_letters_in_sorted_order_and_names_read_as_printed():
    labels = _labels(
        r"""
        @article{z, author = {Smith, Ann and Zhou, Bo and Lee, Cy}, title = {Z}, year = {2020}}
        @article{a, author = {Smith, Ann and Adams, Bo and Lee, Cy}, title = {A}, year = {2020}}
        @article{m, author = {Smith, Ann and Moore, Bo and Lee, Cy}, title = {M}, year = {2020}}
        @article{v, author = {van Merri{\"e}nboer, Bart and Doll{\'a}r, Piotr}, title = {V},
                    year = {2014}}
        @misc{t, title = {{ONNX} Runtime: a fast engine}, year = {2021}}
        @article{s, author = {{Hugging Face}}, title = {S}, year = {2021}}
        """
    )
    assert [labels[k] for k in "amz"] == ["Smith et al. 2020a", "Smith et al. 2020b", "Smith et al. 2020c"]
    assert labels["v"] == "van Merriënboer and Dollár 2014"
    assert labels["t"] == "ONNX Runtime 2021"
    assert labels["s"] == "Hugging Face 2021"
