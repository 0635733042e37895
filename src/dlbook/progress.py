"""Progress bars that work in Jupyter, in Colab and in the static rendered book.

Interactive notebooks get ``tqdm.auto`` (a widget bar). When ``DLBOOK_STATIC_OUTPUT`` is set,
as ``make test`` and ``make book`` do, bars are plain text on stdout: a static HTML page
cannot show widget bars (their JavaScript would come from the internet), text it can.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any


def static_output() -> bool:
    """True when outputs are rendered to a static page (``DLBOOK_STATIC_OUTPUT=1``)."""
    return os.environ.get("DLBOOK_STATIC_OUTPUT", "") not in {"", "0", "false"}


def progress(iterable: Iterable[Any] | None = None, **kwargs: Any):
    """A tqdm bar around ``iterable`` (same keywords as ``tqdm``)."""
    if static_output():
        from tqdm.std import tqdm

        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", 5.0)
        kwargs.setdefault("ncols", 88)
        kwargs.setdefault("ascii", True)
        return tqdm(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
