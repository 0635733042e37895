"""Showing things in the page: packaged source, glued numbers, asserted headline results.

``glue`` writes the same display message as ``myst_nb.glue`` (so ``{glue}`` roles in the
prose pick the value up when the book is built) without importing myst-nb, which keeps the
notebooks light in Colab. Introduced in chapter 1.
"""

from __future__ import annotations

import ast
import html
import inspect
import math
import re
import textwrap
from collections.abc import Mapping
from numbers import Real
from typing import Any

GLUE_PREFIX = "application/papermill.record/"  # the mime prefix myst-nb looks for


def _ipython_display(bundle: dict[str, Any], metadata: dict[str, Any]) -> None:
    from IPython.display import display

    display(bundle, raw=True, metadata=metadata)


def glue(name: str, value: Any, display: bool = False) -> None:
    """Bind ``value`` to ``name`` so the prose can quote it with ``{glue}`name```.

    Numbers are glued as their ``str``; format them before gluing if the prose needs fewer digits.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"glue name must be an identifier-like string, got {name!r}")
    from IPython.core.formatters import format_display_data

    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # NumPy / torch scalars
        value = value.item()  # their repr, e.g. np.float64(0.5), would not take a format spec in the prose
    bundle, metadata = format_display_data(value)
    prefix = "" if display else GLUE_PREFIX
    metadata = dict(metadata)
    metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}
    _ipython_display({prefix + k: v for k, v in bundle.items()}, metadata)


def _resolve_bar(name: str, bar: Any, hardware: str | None) -> tuple[float | None, bool]:
    """``(value, per_class)``: a plain bar as it is, a per-class bar looked up for ``hardware``."""
    if bar is None or (isinstance(bar, Real) and not isinstance(bar, bool)):
        return (None if bar is None else float(bar)), False
    if not isinstance(bar, Mapping):
        raise TypeError(f"headline {name!r}: a bar is a number or a mapping hardware class -> number, got {bar!r}")
    from .env import HARDWARE_CLASSES

    unknown = sorted(set(bar) - set(HARDWARE_CLASSES))
    if unknown:
        raise ValueError(f"headline {name!r}: unknown hardware classes {unknown}; valid: {', '.join(HARDWARE_CLASSES)}")
    return (float(bar[hardware]) if hardware in bar else None), True


def headline(
    name: str,
    value: float,
    *,
    profile: str,
    at_least: float | Mapping[str, float] | None = None,
    at_most: float | Mapping[str, float] | None = None,
    hardware: str | None = None,
    fmt: str = "{:.3f}",
) -> float:
    """Glue a chapter's headline number and assert the bar it must reach in the ``full`` profile.

    In every profile the value must be a finite real number. In ``full`` it must also satisfy
    ``at_least <= value <= at_most`` (whichever are given): a chapter that misses its bar fails
    when executed, it does not just print. The formatted value is glued under ``name``; the raw
    value and the bar are kept in the output metadata, where ``make full`` collects them.

    Accuracy and exactness bars are plain numbers: they hold everywhere. A speed or memory bar
    holds only for the hardware it was measured on, so it is a mapping from a hardware class
    (:data:`dlbook.env.HARDWARE_CLASSES`) to a number, e.g. ``at_least={"cpu-avx2": 1.15}``:
    it is looked up for ``hardware`` (default: the class of the device :func:`dlbook.setup`
    picked; pass ``dlbook.env.hardware_class("cpu")`` for a measurement made on the CPU), and
    on a class the mapping does not name, the value is reported and not asserted.
    """
    from .profiles import check_profile

    check_profile(profile)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise AssertionError(f"headline {name!r} must be a finite number, got {value!r}")
    value = float(value)
    from .env import HARDWARE_CLASSES, last_provenance

    hardware = last_provenance().hardware if hardware is None else hardware
    if hardware not in HARDWARE_CLASSES:
        raise ValueError(f"headline {name!r}: unknown hardware class {hardware!r}; valid: {', '.join(HARDWARE_CLASSES)}")
    low, low_per_class = _resolve_bar(name, at_least, hardware)
    high, high_per_class = _resolve_bar(name, at_most, hardware)
    if low_per_class != high_per_class and at_least is not None and at_most is not None:
        raise TypeError(f"headline {name!r}: give both bars per hardware class, or both as plain numbers")
    per_class = low_per_class or high_per_class
    checked = profile == "full" and (low is not None or high is not None)
    if profile == "full":
        if low is not None and value < low:
            raise AssertionError(f"headline {name!r} = {value:.6g} misses its bar: needs >= {low} (on {hardware})")
        if high is not None and value > high:
            raise AssertionError(f"headline {name!r} = {value:.6g} misses its bar: needs <= {high} (on {hardware})")
        if per_class and not checked:
            print(
                f"{name} = {fmt.format(value)}: no expected range is set for this hardware "
                f"({hardware}), so the value is reported and not checked."
            )
    text = fmt.format(value)
    from IPython.core.formatters import format_display_data

    bundle, metadata = format_display_data(text)
    metadata = dict(metadata)
    metadata["scrapbook"] = {"name": name, "mime_prefix": GLUE_PREFIX}
    metadata["dlbook_headline"] = {
        "name": name,
        "value": value,
        "at_least": low,
        "at_most": high,
        "profile": profile,
        "hardware": hardware,
        "per_class": per_class,
        "checked": checked,
    }
    # text/plain of a str is its repr with quotes; the prose wants the bare number.
    _ipython_display({GLUE_PREFIX + "text/plain": text}, metadata)
    return value


def hardware_headline(name: str, value: float, *, profile: str, hardware: str | None = None, fmt: str = "{:.2f}") -> float:
    """:func:`headline` for a speed or memory number, with its bars per hardware class.

    The bars and the runs they were set from live in :mod:`dlbook.expected` under ``name``. On
    a class with no bar the value is glued and reported, not asserted. Taught in chapter 12.
    """
    from .expected import expected

    bars = expected(name).headline_kwargs()
    return headline(name, value, profile=profile, hardware=hardware, fmt=fmt, **bars)


SHOW_COLLAPSE_LINES = 40  # longer sources are collapsed in the page (HTML <details>)
_CHECK_ERRORS = {"ValueError", "TypeError"}
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)(?:\s*<[^>]*>)?`")  # :func:`x.y` -> x.y


def plain_text(doc: str) -> str:
    """A docstring's reST markup as plain text: ``x`` -> x, :func:`a.b` -> a.b, *x* -> x."""
    text = _ROLE.sub(lambda m: m.group(1), doc)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"(?<![\w*])\*{1,2}([^*\n]+)\*{1,2}(?!\w)", r"\1", text)
    return text


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line, as plain text."""
    if not doc:
        return ""
    first = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(plain_text(first).split())


def _is_argument_check(node: ast.stmt) -> bool:
    """``if <condition>: raise ValueError/TypeError(...)`` with nothing else: an argument check."""
    if not isinstance(node, ast.If) or node.orelse or len(node.body) != 1:
        return False
    raised = node.body[0]
    if not isinstance(raised, ast.Raise) or raised.exc is None:
        return False
    call = raised.exc.func if isinstance(raised.exc, ast.Call) else raised.exc
    return isinstance(call, ast.Name) and call.id in _CHECK_ERRORS


def teaching_source(source: str) -> str:
    """``source`` as the page shows it: docstrings dropped, argument checks folded into a comment.

    A function's docstring is reST for the API reference, not for reading beside the math; the
    ``if ...: raise ValueError/TypeError`` checks keep the entry points safe but are not the
    idea. Both stay in the module; the page shows the computation. Everything else is unchanged.
    """
    source = textwrap.dedent(source)
    try:
        tree = ast.parse(source)
    except SyntaxError:  # e.g. a lambda's line: show it as it is
        return source
    lines = source.splitlines()
    replace: dict[int, str | None] = {}  # 0-based line -> new text (None: drop)

    def indent_of(lineno: int) -> str:
        line = lines[lineno - 1]
        return line[: len(line) - len(line.lstrip())]

    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        body = node.body
        first = body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            for n in range(first.lineno, first.end_lineno + 1):
                replace[n - 1] = None
            if len(body) == 1:
                replace[first.lineno - 1] = f"{indent_of(first.lineno)}..."
            elif first.end_lineno < len(lines) and not lines[first.end_lineno].strip():
                replace[first.end_lineno] = None  # the blank line that followed the docstring
        if isinstance(node, ast.ClassDef):
            continue
        run: list[ast.stmt] = []
        for stmt in [*body, None]:
            if stmt is not None and _is_argument_check(stmt):
                run.append(stmt)
                continue
            if run:
                start, end = run[0].lineno, run[-1].end_lineno
                for n in range(start, end + 1):
                    replace[n - 1] = None
                what = "an argument check" if len(run) == 1 else f"{len(run)} argument checks"
                replace[start - 1] = f"{indent_of(start)}# ({what}: ValueError or TypeError on bad input)"
                run = []
    kept = [replace.get(i, line) for i, line in enumerate(lines)]
    return "\n".join(line for line in kept if line is not None).rstrip() + "\n"


class Source:
    """What :func:`show` returns: a packaged component's source, for the page.

    ``data`` is the text shown (plain Python); in HTML it is highlighted, and a source longer
    than :data:`SHOW_COLLAPSE_LINES` lines is collapsed into a ``<details>`` element whose
    summary names it, so a long function does not push the chapter's text pages down.
    """

    def __init__(self, data: str, title: str) -> None:
        self.data = data
        self.title = title
        self.n_lines = data.count("\n")
        self.collapsed = self.n_lines > SHOW_COLLAPSE_LINES

    def _repr_html_(self) -> str:
        from IPython.display import Code

        code = Code(self.data, language="python")._repr_html_()
        if not self.collapsed:
            return code
        title = html.escape(self.title)
        return f'<details class="dlbook-source"><summary>{title} ({self.n_lines} lines)</summary>{code}</details>'

    def __repr__(self) -> str:  # text/plain: the source itself
        return self.data


def show(obj: Any) -> Source | None:
    """Show the source of a packaged function or class in the page, as the chapter teaches it.

    The first line names where it lives and what it does (its docstring's first paragraph, as
    plain text); docstrings are dropped and argument checks folded (:func:`teaching_source`);
    a long source is collapsed in HTML (:class:`Source`). Taught in chapter 1.
    """
    try:
        source = inspect.getsource(obj)
    except (TypeError, OSError) as err:
        raise TypeError(f"show() needs a function, class or module defined in Python source, got {obj!r}") from err
    module = inspect.getmodule(obj)
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", ""))
    where = module.__name__ if module else ""
    title = f"{where}.{name}" if where and name and not inspect.ismodule(obj) else (where or name)
    header = [f"# {title}" if title else "#"]
    summary = _summary(inspect.getdoc(obj))
    if summary:
        header = [f"# {line}" for line in textwrap.wrap(f"{title}: {summary}", width=86)]
    text = "\n".join(header) + "\n" + teaching_source(source)
    try:
        import IPython  # noqa: F401  (the page renders the returned object)
    except ImportError:  # plain Python: print instead
        print(text)
        return None
    return Source(text, title)
