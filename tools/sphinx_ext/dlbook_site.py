"""Small fixes to the rendered site, loaded by _config.yml (sphinx: local_extensions).

- **One search box.** pydata-sphinx-theme 0.17 puts a search field in a top bar of its own
  unless ``navbar_persistent`` is set (its default when the option is absent); the book theme
  already has one in the sidebar (and a search button in the article header on a phone), so a
  page showed two. ``navbar_persistent`` is set empty, which also drops that top bar.
- **Numbers per chapter.** Sphinx numbers figures, tables, equations and exercises (all
  "enumerable" nodes) through the whole book when the table of contents is not numbered: the
  reader met "Exercise 79" and "(65)". The numbers are rewritten per page: on a page whose title
  starts with a chapter number ("6. Attention ...") the k-th equation is (6.k), the k-th exercise
  "Exercise 6.k"; on a page without one, they count from 1. Cross-references ({eq}, {numref},
  {ref}) read the same table, so they agree with the labels.
- **The notebook in the download menu.** The book theme offers a page's ``.ipynb`` only for
  Markdown notebooks; the chapters are jupytext ``.py`` files, so the menu offered ``.py`` and
  print. The notebook myst-nb wrote for the page (``<build>/jupyter_execute``, with the outputs of
  the build) is copied next to the page's sources and offered as ``.ipynb``.
- **Each script is written into a page once.** The inline configuration scripts of sphinx-thebe
  (``const THEBE_JS_URL = ...``) and sphinx-togglebutton reach the page twice, once with no
  file name and once with an empty one, which Sphinx does not see as the same script; the
  browser then logged "Identifier 'THEBE_JS_URL' has already been declared" on every page.
- **Bibliography labels a reader can match.** The text cites author-year ("Vaswani et al.,
  2017"); pybtex's default labels were alphabetic codes ("[VSP+17]") that match nothing in the
  text. The style ``dlbook`` (``bibtex_default_style`` in _config.yml) labels each entry
  "Vaswani et al. 2017" (one author: the name; two: both; more: the first and "et al."; a
  letter after the year where two entries would share a label) and sorts by author and year.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

CHAPTER_TITLE = re.compile(r"^\s*(\d+)\.\s")


def _one_search_box(app: Any, config: Any) -> None:
    options = dict(config.html_theme_options or {})
    options.setdefault("navbar_persistent", [])
    config.html_theme_options = options


def chapter_number(title: str) -> int | None:
    """The chapter number a page title starts with ("6. Attention" -> 6), or None."""
    match = CHAPTER_TITLE.match(title)
    return int(match.group(1)) if match else None


def renumber(fignumbers: dict[str, dict[str, tuple[int, ...]]], chapter: int | None) -> dict:
    """One page's numbers, per kind, counted from 1 in page order and prefixed by its chapter."""
    prefix = () if chapter is None else (chapter,)
    renumbered = {}
    for figtype, numbers in fignumbers.items():
        in_order = sorted(numbers, key=lambda node_id: numbers[node_id])
        renumbered[figtype] = {node_id: (*prefix, k) for k, node_id in enumerate(in_order, start=1)}
    return renumbered


def _number_per_chapter(app: Any, env: Any) -> list[str]:
    changed = []
    for docname, fignumbers in list(env.toc_fignumbers.items()):
        title = env.titles[docname].astext() if docname in env.titles else ""
        new = renumber(fignumbers, chapter_number(title))
        if new != fignumbers:
            env.toc_fignumbers[docname] = new
            changed.append(docname)
    return changed


def _offer_the_notebook(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    if doctree is None or context.get("ipynb_source") or context.get("page_source_suffix") != ".py":
        return
    outdir = Path(app.outdir)
    executed = outdir.parent / "jupyter_execute" / f"{pagename}.ipynb"
    pair = Path(app.srcdir) / f"{pagename}.ipynb"  # the outputs-free pair, if nothing was written
    source = executed if executed.is_file() else pair
    if not source.is_file():
        return
    target = outdir / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def _drop_repeated_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    kept = []
    for script in scripts:
        # An inline script is registered once with filename None and once with "": the same script.
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def _plain(latex: str) -> str:
    """A BibTeX value as plain text: braces dropped, accents such as ``{\\"e}`` decoded."""
    from pybtex.richtext import Text

    return Text.from_latex(latex).render_as("text")


def _author_year_label(entry: Any) -> str:
    """'Name Year', 'Name and Other Year' or 'Name et al. Year' for a pybtex entry.

    A name keeps its particle ("van Merriënboer"), as the author-year citations in the text do.
    """
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_plain(" ".join(p.prelast_names + p.last_names)) for p in people]
    if not names:
        who = _plain(entry.fields.get("title", entry.key)).split(":")[0]
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who} {entry.fields.get('year', 'n.d.')}"


def _register_bibliography_style() -> None:
    """Register the pybtex label and formatting styles named ``dlbook`` (see the module doc)."""
    from pybtex.plugin import register_plugin
    from pybtex.style.formatting.unsrt import Style as UnsrtStyle
    from pybtex.style.labels import BaseLabelStyle

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries):
            labels = [_author_year_label(entry) for entry in sorted_entries]
            seen: dict[str, int] = {}
            for label in labels:
                seen[label] = seen.get(label, 0) + 1
            suffix: dict[str, int] = {}
            for label in labels:
                if seen[label] > 1:  # "Hu et al. 2022a", "Hu et al. 2022b"
                    suffix[label] = suffix.get(label, 0) + 1
                    yield f"{label}{chr(ord('a') + suffix[label] - 1)}"
                else:
                    yield label

    class DlbookStyle(UnsrtStyle):
        default_label_style = "dlbook_author_year"
        default_sorting_style = "author_year_title"

    register_plugin("pybtex.style.labels", "dlbook_author_year", AuthorYearLabels, force=True)
    register_plugin("pybtex.style.formatting", "dlbook", DlbookStyle, force=True)


def setup(app: Any) -> dict[str, Any]:
    _register_bibliography_style()
    app.connect("config-inited", _one_search_box)
    # after Sphinx's toctree collector (priority 500) has assigned the book-wide numbers
    app.connect("env-get-updated", _number_per_chapter, priority=900)
    # before the book theme builds its download menu (priority 501)
    app.connect("html-page-context", _offer_the_notebook, priority=400)
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
