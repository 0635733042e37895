"""Run profiles: one notebook, two sizes (book/how-to-use.md explains them).

``smoke`` is for tests and CI (seconds per chapter), ``full`` is for readers and the rendered
book (about ten minutes per chapter on two CPU cores). A chapter states both sizes in its
``parameters`` cell with :func:`by_profile`; nothing else in the chapter depends on the name.
"""

from __future__ import annotations

import os
from typing import Any

PROFILES: tuple[str, ...] = ("smoke", "full")
ENV_VAR = "DLBOOK_PROFILE"
DEFAULT_PROFILE = "full"


def check_profile(profile: str) -> str:
    """Return ``profile`` if it is a known profile name, else raise ``ValueError`` naming the valid ones."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: valid profiles are {', '.join(PROFILES)}")
    return profile


def current_profile() -> str:
    """The profile named by the ``DLBOOK_PROFILE`` environment variable, ``full`` when unset."""
    return check_profile(os.environ.get(ENV_VAR, DEFAULT_PROFILE))


def by_profile(profile: str, **sizes: dict[str, Any]) -> dict[str, Any]:
    """Pick the chapter's sizes for ``profile``.

    >>> by_profile("smoke", smoke=dict(n=8), full=dict(n=1000))
    {'n': 8}

    Every profile must be given (so a chapter cannot forget one) and with the same keys (so
    the code below the parameters cell never meets a missing size in one profile only).
    """
    check_profile(profile)
    missing = [p for p in PROFILES if p not in sizes]
    extra = [p for p in sizes if p not in PROFILES]
    if missing or extra:
        raise ValueError(
            f"by_profile needs exactly the profiles {', '.join(PROFILES)}; "
            f"missing: {missing or 'none'}, unknown: {extra or 'none'}"
        )
    keys = {p: set(v) for p, v in sizes.items()}
    reference = keys[PROFILES[0]]
    for p, k in keys.items():
        if k != reference:
            raise ValueError(f"profile {p!r} sets keys {sorted(k)} but {PROFILES[0]!r} sets {sorted(reference)}")
    return dict(sizes[profile])
