"""dlbook: the shared helpers of the book *Deep Learning, Verified*.

Small modules by concern; each one's docstring names the chapter that teaches it. The top level
re-exports what every chapter calls: ``setup`` (:mod:`dlbook.env`), ``by_profile``
(:mod:`dlbook.profiles`), ``glue``, ``headline`` and ``show`` (:mod:`dlbook.display`) and
``progress`` (:mod:`dlbook.progress`).

Module map
----------
module -> the chapter that teaches it -> the chapters that use it (from their imports).
``tests/test_module_map.py`` fails when a module of ``src/dlbook`` is missing here or in
CONTRIBUTING.md.

====================  ========  ==========================================================
module                taught    used in chapters
====================  ========  ==========================================================
dlbook.env            1         every chapter (``setup``: seed, device, provenance line)
dlbook.profiles       1         every chapter (``by_profile``: smoke and full sizes)
dlbook.display        1         every chapter (``glue``, ``show``, ``headline``)
dlbook.progress       1         1-8, 11-15, 17, 18, 20
dlbook.colab          1         every chapter (the Colab install cell; plumbing)
dlbook.exercises      1         every chapter (``check`` of code exercises)
dlbook.assets         1         1-5, 7-18, 20 (offline models and data sets)
dlbook.embeddings     1         1, 9
dlbook.doctor         --        none: ``python -m dlbook.doctor`` checks an installation
dlbook.models         2         2, 3, 13
dlbook.train          2         2, 3, 9, 10
dlbook.loop           2         through the training wrappers (``train.fit`` and the others)
dlbook.stats          3         1, 3-5, 7, 8, 10, 12-15, 17-20
dlbook.nn.conv        3         3
dlbook.charlm         4         4, 5, 7
dlbook.nn.recurrent   4, 5      4, 5
dlbook.nn.attention   6         6, 7, 17, 90
dlbook.nn.transformer 7, 19     7, 8, 17, 19, 90
dlbook.nn.bert        8         8
dlbook.finetune       9         9-16, 18
dlbook.modelcache     9         through ``finetune``, ``prune``, ``distill``, ``combined``
dlbook.memory         6         6, 10, 13
dlbook.budget         10        10
dlbook.lora           10        10, 20
dlbook.hub            11        11
dlbook.serving        11        11
dlbook.quantize       12        12, 15
dlbook.ort            12        12, 15
dlbook.measure        12        3, 6, 10, 12-15, 18, 90
dlbook.expected       12        10, 12, 14, 15
dlbook.prune          13        13, 15
dlbook.distill        14        13, 14, 15
dlbook.combined       15        15
dlbook.lean           15        15
dlbook.distributed    16        16
dlbook.nn.llama       17        17, 18, 20
dlbook.generate       18        18
dlbook.seq2seq        19        19
dlbook.instruct       20        20
dlbook.gguf_quant     20        20
====================  ========  ==========================================================

Where new code goes: a component is built step by step in the chapter that teaches it, then
lives once here, in the module of its concern (a network part in ``dlbook.nn``; a training
step in ``dlbook.loop``; a measurement in ``dlbook.measure``; a chapter's exercise checks in
``dlbook.exercises.chNN``), typed, with a docstring naming that chapter, argument checks in small
helpers and unit tests in ``tests/``. The chapter shows it with ``dlbook.show`` and asserts that
its own version and the packaged one agree; later chapters import it. Code only one chapter uses
stays in that chapter.

The model cache (:mod:`dlbook.modelcache`): a model that takes minutes to train and that later
chapters reuse (chapter 9's classifier, 13's pruned model, 14's students, 15's pruned student)
is trained the first time it is asked for and saved in ``$DLBOOK_CACHE`` (default
``~/.cache/dlbook``), in a folder named ``<kind>-<profile>-<12 hex digits>``. The digits are a
hash of everything that decides the weights: the recipe's version number and settings for the
profile, the models it starts from, the versions of torch, transformers, datasets and the data
packages, and the device type. Change any of them (bump the recipe number when the training
code changes) and a new model is trained; a stale one is never read. The accessors
(``finetune.sentiment_classifier``, ``prune.pruned_classifier``, ``distill.distilled_student``,
``combined.pruned_student``) all go through ``modelcache.cached_recipe``.
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
