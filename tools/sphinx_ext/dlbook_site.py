"""Small fixes to the rendered site, loaded by _config.yml (sphinx: local_extensions).

- Each script is written into a page once. The inline configuration scripts of sphinx-thebe
  (``const THEBE_JS_URL = ...``) and sphinx-togglebutton reach the page twice, once with no
  file name and once with an empty one, which Sphinx does not see as the same script; the
  browser then logged "Identifier 'THEBE_JS_URL' has already been declared" on every page.
"""

from __future__ import annotations

from typing import Any


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


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
