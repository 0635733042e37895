"""``python -m dlbook.doctor``: check this environment can run the book, and say what to fix.

Checks the Python and library versions against requirements.txt, that every offline asset
is installed and loads with the network off (SmolLM2 is converted to fp32 once and run on two
tokens), which device the chapters will use, and the free
memory and disk. Each problem comes with the command that fixes it. Exit status 1 if any
check failed.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

MIN_FREE_MEMORY_GB = 3.0
MIN_FREE_DISK_GB = 2.0
KEY_PACKAGES = ("torch", "transformers", "datasets", "jupyter-book", "myst-nb", "jupytext", "nbval")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _installed(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def pinned_versions(requirements: Path) -> dict[str, str]:
    """``{name: version}`` for the ``name==version`` lines of a requirements file."""
    pins = {}
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = ver.strip()
    return pins


def check_python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check("python", ok, sys.version.split()[0], "" if ok else "install Python 3.11 and re-create .venv")


def check_versions(requirements: Path | None) -> list[Check]:
    pins = pinned_versions(requirements) if requirements and requirements.is_file() else {}
    checks = []
    for dist in KEY_PACKAGES:
        have = _installed(dist)
        want = pins.get(dist)
        if have is None:
            checks.append(Check(dist, False, "not installed", "run  make install  (or pip install -r requirements.txt)"))
        elif want and have.split("+")[0] != want:
            checks.append(Check(dist, False, f"{have}, the book is tested with {want}", f"pip install {dist}=={want}"))
        else:
            checks.append(Check(dist, True, have))
    jb = _installed("jupyter-book")
    if jb and not jb.startswith("1."):
        checks.append(Check("jupyter-book major", False, f"{jb} ignores _config.yml/_toc.yml", "pip install 'jupyter-book<2'"))
    return checks


def _smollm2_runs() -> None:
    """Build the fp32 SmolLM2 from the model cache (converting it once if needed) and run two tokens."""
    import torch

    from . import assets

    model, _ = assets.smollm2()
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2]])).logits
    if logits.shape != (1, 2, model.config.vocab_size) or not torch.isfinite(logits).all():
        raise assets.AssetError(
            f"the converted SmolLM2 in {assets.smollm2_folder()} gives broken logits: "
            "delete that folder and run again to convert it afresh"
        )


def check_assets() -> list[Check]:
    from . import assets

    loaders: dict[str, Callable[[], object]] = {
        "MiniLM encoder": assets.minilm_path,
        "SmolLM2 GGUF": assets.smollm2_gguf,
        "SmolLM2 model": _smollm2_runs,
        "Rotten Tomatoes": assets.rotten_tomatoes,
        "MNIST-5k": assets.mnist5k,
        "CO2 series": assets.co2,
        "census names": assets.census_names,
    }
    checks = []
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # loading must not need the network
    try:
        for name, load in loaders.items():
            try:
                load()
                checks.append(Check(name, True, "loads offline"))
            except Exception as err:  # report every asset, not just the first failure
                checks.append(Check(name, False, f"{type(err).__name__}: {err}", "see the message; make install fixes most"))
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous
    return checks


def check_device() -> Check:
    from .env import device_name, pick_device

    device = pick_device()
    note = "" if device.type != "cpu" else " (no GPU found: every chapter still runs, the full profile in minutes)"
    return Check("device", True, f"{device} ({device_name(device)}){note}")


def _free_memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        return None
    return None


def check_resources(path: Path) -> list[Check]:
    checks = []
    mem = _free_memory_gb()
    if mem is not None:
        ok = mem >= MIN_FREE_MEMORY_GB
        checks.append(
            Check(
                "free memory",
                ok,
                f"{mem:.1f} GB",
                "" if ok else f"close programs: the full profile wants {MIN_FREE_MEMORY_GB} GB",
            )
        )
    disk = shutil.disk_usage(path).free / 1024**3
    ok = disk >= MIN_FREE_DISK_GB
    fix = "" if ok else f"free {MIN_FREE_DISK_GB} GB for caches and the build"
    checks.append(Check("free disk", ok, f"{disk:.1f} GB", fix))
    return checks


def run(root: Path | None = None) -> list[Check]:
    root = root or Path.cwd()
    return [check_python(), *check_versions(root / "requirements.txt"), *check_assets(), check_device(), *check_resources(root)]


def main() -> int:
    checks = run()
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            print(f"{'':6}{'':<{width}}  fix: {c.fix}")
    failed = [c for c in checks if not c.ok]
    print("\nEverything the book needs is here." if not failed else f"\n{len(failed)} problem(s) to fix, see above.")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
