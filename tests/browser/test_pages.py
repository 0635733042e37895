"""Open every page of the built book in headless Chromium and look at it as a reader would.

A page fails if it shows math that MathJax did not typeset, an error or traceback in a cell
output, a broken image, a request that left 127.0.0.1, or (chapter pages) no Colab button
pointing at the chapter's notebook. A screenshot of every chapter page is kept in
``<build>/screenshots``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SKIP = {"genindex.html", "search.html", "py-modindex.html"}

# What a reader would notice, read off the rendered page.
INSPECT_JS = """() => {
  const math = [...document.querySelectorAll('.math')];
  const article = (document.querySelector('article') || document.body).cloneNode(true);
  article.querySelectorAll('pre, code, .highlight, mjx-container').forEach(e => e.remove());  // code may show TeX
  return {
    untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60)),
    errors: [...document.querySelectorAll('.cell_output .output.error, .cell_output .output.traceback')]
              .map(e => e.textContent.slice(0, 120)),
    tracebacks: [...document.querySelectorAll('.cell_output')]
              .filter(o => o.textContent.includes('Traceback (most recent call last)')).length,
    broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
    colab: [...document.querySelectorAll('a[href*="colab.research.google.com"]')].map(a => a.href),
    figures: document.querySelectorAll('.cell_output img').length,
    rawTex: (article.textContent.match(/\\$\\$|\\\\\\(|\\\\\\[/g) || []).length,
  };
}"""

# Resolves when MathJax has typeset the page (or at once when the page has no math).
MATHJAX_DONE_JS = """() => (window.MathJax && MathJax.startup && MathJax.startup.promise)
  ? MathJax.startup.promise.then(() => true) : true"""


def pages(html_dir: Path) -> list[str]:
    found = []
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir)
        if path.name in SKIP or rel.parts[0].startswith("_") or 'http-equiv="Refresh"' in path.read_text()[:2000]:
            continue  # Sphinx's own pages, static files, redirects
        found.append(str(rel))
    return found


def inspect(browser, url: str, local_prefix: str) -> tuple[dict, list[str], object]:
    """Load ``url``, block and record any request that is not local, wait for MathJax, inspect."""
    page = browser.new_page()
    outside: list[str] = []

    def route(r):
        if r.request.url.startswith(local_prefix) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)[:120]))
    page.goto(url, wait_until="load")
    page.evaluate(MATHJAX_DONE_JS)
    report = page.evaluate(INSPECT_JS)
    report["scriptErrors"] = script_errors
    return report, outside, page


def problems_of(rel: str, report: dict, outside: list[str]) -> list[str]:
    problems = []
    if report["untypeset"]:
        problems.append(f"{rel}: math not typeset: {report['untypeset'][:3]}")
    if report["rawTex"]:
        problems.append(f"{rel}: raw TeX delimiters visible in the text ({report['rawTex']})")
    if report["errors"] or report["tracebacks"]:
        problems.append(f"{rel}: error output shown: {report['errors'][:2]} ({report['tracebacks']} tracebacks)")
    if report["broken"]:
        problems.append(f"{rel}: broken images: {report['broken'][:3]}")
    if outside:
        problems.append(f"{rel}: requests left 127.0.0.1: {sorted(set(outside))[:3]}")
    if report["scriptErrors"]:
        problems.append(f"{rel}: script errors: {report['scriptErrors'][:3]}")
    if rel.startswith("notebooks/"):
        stem = Path(rel).stem
        if not any(href.endswith(f"notebooks/{stem}.ipynb") for href in report["colab"]):
            problems.append(f"{rel}: no Colab button pointing at notebooks/{stem}.ipynb (found {report['colab']})")
        if not report["figures"]:
            problems.append(f"{rel}: no figure in any cell output (every chapter has plots: is a plot backend hiding them?)")
    return problems


def test_every_page_renders_cleanly(html_dir, server, browser):
    all_pages = pages(html_dir)
    assert any(p.startswith("notebooks/") for p in all_pages), "no chapter pages were built"
    shots = html_dir.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    problems: list[str] = []
    for rel in all_pages:
        report, outside, page = inspect(browser, f"{server}/{rel}", server)
        problems += problems_of(rel, report, outside)
        if rel.startswith("notebooks/"):
            page.screenshot(path=str(shots / f"{Path(rel).stem}.png"))
        page.close()
    assert not problems, "\n".join(problems)


BAD_PAGES = {  # defect: (page body, what the report must say)
    "untypeset": ('<span class="math notranslate nohighlight">\\(x^2\\)</span>', "math not typeset"),
    "traceback": ('<div class="cell_output"><pre>Traceback (most recent call last):\n  boom</pre></div>', "error output"),
    "broken image": ('<img src="missing.png">', "broken images"),
    "outside request": ('<img src="http://example.invalid/x.png">', "requests left"),
    "raw tex": ("<p>so $$x^2$$ stays raw</p><pre>$$ in code is fine $$</pre>", "raw TeX"),
    "script error": ("<script>const A = 1;</script><script>const A = 2;</script>", "script errors"),
}


@pytest.mark.parametrize("defect", BAD_PAGES)
def test_the_check_detects_broken_pages(tmp_path, browser, defect):
    """The checks must be able to fail: a page with one defect is reported."""
    html = tmp_path / "bad.html"
    body, verdict = BAD_PAGES[defect]
    html.write_text(f"<html><body><article>{body}</article></body></html>")
    report, outside, page = inspect(browser, html.as_uri(), "file:")
    page.close()
    problems = problems_of("notebooks/bad.html", report, outside)
    assert any(verdict in p for p in problems), problems
    assert any("no Colab button" in p for p in problems)


SIDEBARS_JS = """() => [
  document.getElementById('pst-primary-sidebar-modal')?.open ?? null,
  document.getElementById('pst-secondary-sidebar-modal')?.open ?? null,
  document.getElementById('pst-primary-sidebar')?.classList.contains('pst-sidebar-hidden') ?? null,
]"""


def _visible(page, selector: str):
    shown = [b for b in page.query_selector_all(selector) if b.is_visible()]
    assert shown, f"no visible {selector} button"
    return shown[0]


def test_sidebar_toggles_work_on_a_phone_and_a_desktop(html_dir, server, browser):
    """The hamburger opens the navigation drawer at 390 px and hides the sidebar at 1366 px."""
    chapter = next(p for p in pages(html_dir) if p.startswith("notebooks/"))
    phone = browser.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto(f"{server}/{chapter}", wait_until="load")
    _visible(phone, ".primary-toggle").click()
    phone.wait_for_timeout(300)
    assert phone.evaluate(SIDEBARS_JS)[0] is True, "phone: the navigation drawer did not open"
    phone.keyboard.press("Escape")
    phone.wait_for_timeout(300)
    _visible(phone, ".secondary-toggle").click()
    phone.wait_for_timeout(300)
    assert phone.evaluate(SIDEBARS_JS)[1] is True, "phone: the page-contents drawer did not open"
    phone.close()
    desktop = browser.new_page()
    desktop.set_viewport_size({"width": 1366, "height": 900})
    desktop.goto(f"{server}/{chapter}", wait_until="load")
    assert desktop.evaluate(SIDEBARS_JS)[2] is False
    _visible(desktop, ".primary-toggle").click()
    desktop.wait_for_timeout(300)
    assert desktop.evaluate(SIDEBARS_JS)[2] is True, "desktop: the sidebar toggle did nothing"
    desktop.close()


def _chapters(html_dir: Path) -> list[str]:
    return [p for p in pages(html_dir) if p.startswith("notebooks/")]


VISIBLE_SEARCH_JS = """() => [...document.querySelectorAll('.search-button__button, .bd-search')]
  .filter(e => e.offsetParent !== null && e.getBoundingClientRect().width > 0).length"""


def test_one_search_box_and_it_finds_a_term(html_dir, server, browser):
    """One search control is visible (desktop and phone), and searching "attention" finds chapter 6."""
    chapter = _chapters(html_dir)[0]
    for width, height in [(1366, 900), (390, 844)]:
        page = browser.new_page()
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{server}/{chapter}", wait_until="load")
        assert page.evaluate(VISIBLE_SEARCH_JS) == 1, f"{width} px: expected one visible search box"
        page.close()
    page = browser.new_page()
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{server}/{chapter}", wait_until="load")
    page.locator(".search-button__button:visible").first.click()
    field = page.locator(".search-button__search-container input[name=q]:visible, form.bd-search input:visible").first
    field.fill("attention")
    field.press("Enter")
    page.wait_for_url("**/search.html?q=attention*")
    # Sphinx adds results one by one and writes "found N pages" in its summary at the end
    page.wait_for_function(
        "() => /found/i.test(document.querySelector('#search-results .search-summary')?.textContent || '')",
        timeout=60_000,
    )
    found = page.eval_on_selector_all("#search-results li a", "links => links.map(a => a.href)")
    page.close()
    assert any("06_attention" in href for href in found), f"search for 'attention' missed chapter 6: {found[:5]}"


DARK_JS = """() => {
  const article = document.querySelector('.bd-content article') || document.body;
  let img = article.querySelector('.cell_output img');
  if (!img) {  // a build without outputs: check the rule on a figure of the same structure
    const out = document.createElement('div');
    out.className = 'cell_output';
    img = document.createElement('img');
    img.src = 'data:image/gif;base64,R0lGODlhAQABAAAAACw=';
    out.appendChild(img);
    article.appendChild(out);
  }
  const lum = (css) => {
    const [r, g, b] = css.match(/[0-9.]+/g).slice(0, 3).map(v => {
      v = Number(v) / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const contrast = (a, b) => (Math.max(lum(a), lum(b)) + 0.05) / (Math.min(lum(a), lum(b)) + 0.05);
  const page = getComputedStyle(document.body).backgroundColor;
  const text = getComputedStyle(article.querySelector('p') || article).color;
  const math = document.querySelector('mjx-container');
  return {
    theme: document.documentElement.dataset.theme,
    page: page,
    imgBackground: getComputedStyle(img).backgroundColor,
    imgFilter: getComputedStyle(img).filter,
    textContrast: contrast(text, page),
    mathContrast: math ? contrast(getComputedStyle(math).color, page) : null,
  };
}"""


def test_dark_mode_keeps_figures_and_math_legible(html_dir, server, browser):
    """In dark mode the page is dark, text and math contrast with it, figures sit on white."""
    chapter = next(p for p in _chapters(html_dir) if "06_attention" in p)
    page = browser.new_page()
    page.goto(f"{server}/{chapter}", wait_until="load")
    page.evaluate(MATHJAX_DONE_JS)
    page.evaluate("() => { document.documentElement.dataset.theme = 'dark'; document.documentElement.dataset.mode = 'dark'; }")
    page.wait_for_timeout(200)
    report = page.evaluate(DARK_JS)
    shots = html_dir.parent / "screenshots"
    if shots.is_dir():
        page.screenshot(path=str(shots / "dark-mode.png"))
    page.close()
    assert report["theme"] == "dark"
    assert report["imgBackground"] == "rgb(255, 255, 255)", report
    assert report["imgFilter"] == "none", report
    assert report["textContrast"] >= 4.5, report
    assert report["mathContrast"] is None or report["mathContrast"] >= 4.5, report
    light = sum(int(v) for v in re.findall(r"\d+", report["page"])[:3])
    assert light < 3 * 100, f"the dark theme did not darken the page: {report['page']}"


OVERFLOW_JS = """() => ({
  page: document.documentElement.scrollWidth, view: window.innerWidth,
  wide: [...document.querySelectorAll('.bd-content *')]
          .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && e.offsetParent !== null
                       && !e.closest('pre, .highlight, .output, mjx-container, .math, table, .cell_output'))
          .slice(0, 3).map(e => e.tagName + '.' + e.className),
})"""


def test_phone_layout_has_no_horizontal_overflow(html_dir, server, browser):
    """At 390 px no chapter page scrolls sideways: wide code, math and tables scroll in their boxes."""
    problems = []
    page = browser.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    for rel in _chapters(html_dir):
        page.goto(f"{server}/{rel}", wait_until="load")
        page.evaluate(MATHJAX_DONE_JS)
        report = page.evaluate(OVERFLOW_JS)
        if report["page"] > report["view"] + 1:
            problems.append(f"{rel}: page is {report['page']} px wide at {report['view']} px ({report['wide']})")
    page.close()
    assert not problems, "\n".join(problems)


def test_chapter_pages_offer_the_notebook(html_dir, server, browser):
    """The download menu of every chapter offers its .ipynb, and the file is there."""
    problems = []
    for rel in _chapters(html_dir):
        stem = Path(rel).stem
        text = (html_dir / rel).read_text()
        if f"_sources/notebooks/{stem}.ipynb" not in text:
            problems.append(f"{rel}: no .ipynb in the download menu")
        elif not (html_dir / "_sources" / "notebooks" / f"{stem}.ipynb").is_file():
            problems.append(f"{rel}: the .ipynb it offers is missing")
    assert not problems, "\n".join(problems)
