"""Shared test setup: every test runs offline.

`make test` (through tools/offline_env.sh) already sets the environment and blocks the network
in every process, Jupyter kernels included. A plain `pytest tests/` gets the same here.
"""

import os
import runpy
import socket
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["DLBOOK_BLOCK_NETWORK"] = "1"
if socket.socket.connect.__name__ != "guarded":  # not yet blocked by sitecustomize
    runpy.run_path(str(Path(__file__).parent / "offline" / "sitecustomize.py"))
