"""Internal links and anchors of the built book all resolve (no network needed)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def broken_links(html_dir: Path) -> list[str]:
    parsed = {p: parse(p) for p in html_dir.rglob("*.html") if "_static" not in p.parts}
    problems = []
    for path, page in parsed.items():
        for href in page.links:
            url = urlparse(href)
            if url.scheme or href.startswith(("mailto:", "javascript:", "//")):
                continue  # external: not checked offline
            target, anchor = urldefrag(href)
            dest = (path.parent / unquote(target)).resolve() if target else path
            if dest.is_dir():
                dest = dest / "index.html"
            rel = path.relative_to(html_dir)
            if not dest.exists():
                problems.append(f"{rel}: link to missing {href}")
            elif anchor and dest.suffix == ".html":
                ids = parsed[dest].ids if dest in parsed else parse(dest).ids
                if unquote(anchor) not in ids:
                    problems.append(f"{rel}: link to missing anchor {href}")
    return problems


def test_internal_links_and_anchors_resolve(html_dir):
    problems = broken_links(html_dir)
    assert not problems, "\n".join(problems[:30])


def test_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "a.html").write_text('<a href="b.html#there">x</a><a href="c.html">y</a><a href="#top">z</a><p id="top"></p>')
    (tmp_path / "b.html").write_text('<p id="elsewhere"></p>')
    problems = broken_links(tmp_path)
    assert problems == ["a.html: link to missing anchor b.html#there", "a.html: link to missing c.html"]
