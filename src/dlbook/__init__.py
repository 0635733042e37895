"""dlbook: the shared helpers of the book *Deep Learning, Verified*.

Small modules by concern; each component's docstring names the chapter that teaches it.

- :mod:`dlbook.env`: ``setup()`` (seeds, device, provenance line)
- :mod:`dlbook.profiles`: ``by_profile()`` and the profile names
- :mod:`dlbook.assets`: the offline model and data sets
- :mod:`dlbook.display`: ``show()``, ``glue()``, ``headline()``, ``hardware_headline()``
- :mod:`dlbook.expected`: speed and memory bars per hardware class, with their measured runs
- :mod:`dlbook.progress`: ``progress()`` bars
- :mod:`dlbook.exercises`: ``check()`` for code exercises
"""

from . import assets, exercises, expected
from .display import glue, hardware_headline, headline, show
from .env import pick_device, provenance, seed_everything, setup
from .profiles import PROFILES, by_profile, check_profile, current_profile
from .progress import progress

__version__ = "0.1.0"

__all__ = [
    "assets",
    "exercises",
    "expected",
    "PROFILES",
    "by_profile",
    "check_profile",
    "current_profile",
    "glue",
    "hardware_headline",
    "headline",
    "pick_device",
    "progress",
    "provenance",
    "seed_everything",
    "setup",
    "show",
]
