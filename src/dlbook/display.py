"""Showing things in the page: packaged source, glued numbers, asserted headline results.

``glue`` writes the same display message as ``myst_nb.glue`` (so ``{glue}`` roles in the
prose pick the value up when the book is built) without importing myst-nb, which keeps the
notebooks light in Colab. Introduced in chapter 1.
"""

from __future__ import annotations

import inspect
import math
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


def headline(
    name: str,
    value: float,
    *,
    profile: str,
    at_least: float | None = None,
    at_most: float | None = None,
    fmt: str = "{:.3f}",
) -> float:
    """Glue a chapter's headline number and assert the bar it must reach in the ``full`` profile.

    In every profile the value must be a finite real number. In ``full`` it must also satisfy
    ``at_least <= value <= at_most`` (whichever are given): a chapter that misses its bar fails
    when executed, it does not just print. The formatted value is glued under ``name``; the raw
    value and the bar are kept in the output metadata, where ``make full`` collects them.
    """
    from .profiles import check_profile

    check_profile(profile)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise AssertionError(f"headline {name!r} must be a finite number, got {value!r}")
    value = float(value)
    if profile == "full":
        if at_least is not None and value < at_least:
            raise AssertionError(f"headline {name!r} = {value:.6g} misses its bar: needs >= {at_least}")
        if at_most is not None and value > at_most:
            raise AssertionError(f"headline {name!r} = {value:.6g} misses its bar: needs <= {at_most}")
    text = fmt.format(value)
    from IPython.core.formatters import format_display_data

    bundle, metadata = format_display_data(text)
    metadata = dict(metadata)
    metadata["scrapbook"] = {"name": name, "mime_prefix": GLUE_PREFIX}
    metadata["dlbook_headline"] = {
        "name": name, "value": value, "at_least": at_least, "at_most": at_most, "profile": profile,
    }
    # text/plain of a str is its repr with quotes; the prose wants the bare number.
    _ipython_display({GLUE_PREFIX + "text/plain": text}, metadata)
    return value


def show(obj: Any) -> Any:
    """Render the source code of a function or class (e.g. a packaged component) in the page."""
    try:
        source = inspect.getsource(obj)
    except (TypeError, OSError) as err:
        raise TypeError(f"show() needs a function, class or module defined in Python source, got {obj!r}") from err
    module = inspect.getmodule(obj)
    where = f"# from {module.__name__}" if module else ""
    try:
        from IPython.display import Code

        return Code(f"{where}\n{source}", language="python")
    except ImportError:  # plain Python: print instead
        print(where)
        print(source)
        return None
