"""Seeding, device choice and the provenance line every chapter prints.

book/reproducibility.md explains what the provenance line records and why."""

from __future__ import annotations

import os
import platform
import random
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .profiles import check_profile, current_profile


def pick_device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: torch.device | str | None = None, *, model: torch.nn.Module | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` means where ``model`` lives, else
    :func:`pick_device`. The one place the book turns a device argument into a device."""
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must be a torch.device or a name like 'cpu', got {device!r}") from err
    if model is not None:
        first = next(iter(model.parameters()), None)
        if first is None:
            first = next(iter(model.buffers()), None)
        if first is not None:
            return first.device
        return torch.device("cpu")
    return pick_device()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so a run repeats on the same machine."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of /proc/cpuinfo (Linux), or ``None``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


#: The x86 instruction sets that decide how fast int8 and bf16 matrix products run on a CPU:
#: AVX2 (8 floats per instruction), AVX-512 (16), VNNI (int8 dot products in one instruction,
#: chapter 12), AVX-512 BF16 and AMX (bf16 products without converting to fp32, chapter 10).
MATRIX_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


#: Environment variable that overrides the detected CPU instruction sets (a comma-separated list
#: of :data:`MATRIX_FEATURES`, or ``none``). Used to test the code paths of other hardware classes,
#: and, together with ``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA`` and
#: ``FBGEMM_ENABLE_INSTRUCTIONS``, to run PyTorch's AVX2 kernels on a newer CPU
#: (``tools/as_avx2.sh``).
FEATURES_OVERRIDE = "DLBOOK_CPU_FEATURES"


def cpu_features() -> tuple[str, ...]:
    """Which of :data:`MATRIX_FEATURES` this CPU advertises (the flags of /proc/cpuinfo on Linux).

    Empty where the flags cannot be read (macOS, Windows, non-x86). The speed-ups of int8
    (chapter 12) and bf16 (chapter 10) on a CPU depend on them, so the provenance line shows them.
    ``$DLBOOK_CPU_FEATURES`` (see :data:`FEATURES_OVERRIDE`) replaces the detected list.
    """
    override = os.environ.get(FEATURES_OVERRIDE)
    if override is not None:
        wanted = {x.strip() for x in override.split(",") if x.strip() and x.strip() != "none"}
        unknown = sorted(wanted - set(MATRIX_FEATURES))
        if unknown:
            raise ValueError(
                f"${FEATURES_OVERRIDE} names unknown instruction sets {unknown}; "
                f"valid: {', '.join(MATRIX_FEATURES)} (or 'none')"
            )
        flags = wanted
    else:
        flags = set((_cpuinfo("flags") or "").split())
    return tuple(x for x in MATRIX_FEATURES if x in flags)


#: The hardware classes a chapter's speed or memory bars are set for, fastest CPU class first.
#: A CPU's class is decided by the instruction sets that change int8 and bf16 speed:
#: AMX (Sapphire Rapids and later), AVX-512 with bf16 (Zen 4, Cooper Lake), AVX-512 with VNNI
#: (Cascade Lake, Ice Lake), AVX-512 alone (Skylake-SP), AVX2 alone (Haswell to Zen 3, most
#: laptops), then anything else (ARM, old x86).
HARDWARE_CLASSES = (
    "cuda",
    "mps",
    "cpu-amx",
    "cpu-avx512-bf16",
    "cpu-avx512-vnni",
    "cpu-avx512",
    "cpu-avx2",
    "cpu-other",
)


def hardware_class(device: torch.device | str | None = None) -> str:
    """The class of ``device`` (default: :func:`pick_device`) among :data:`HARDWARE_CLASSES`.

    A chapter's assertions about speed and memory hold for a named class (chapter 12 explains
    why int8 speed depends on it); on a class a chapter has no bar for, it reports instead.
    """
    device = resolve_device(device)
    if device.type in ("cuda", "mps"):
        return device.type
    if device.type != "cpu":
        raise ValueError(f"no hardware class for device type {device.type!r}")
    features = set(cpu_features())
    if features & {"amx_bf16", "amx_int8"}:
        return "cpu-amx"
    if "avx512f" in features:
        if "avx512_bf16" in features:
            return "cpu-avx512-bf16"
        return "cpu-avx512-vnni" if "avx512_vnni" in features else "cpu-avx512"
    return "cpu-avx2" if "avx2" in features else "cpu-other"


def device_name(device: torch.device) -> str:
    """A human name for ``device``: the GPU model, or the CPU model with its :func:`cpu_features`."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    features = cpu_features()
    return f"{cpu_name()} ({', '.join(features)})" if features else cpu_name()


@dataclass(frozen=True)
class Provenance:
    """Where and with what a chapter ran; printed by :func:`setup`, reused by measurement tables."""

    device: str
    device_name: str
    hardware: str
    threads: int
    torch: str
    transformers: str
    datasets: str
    python: str
    profile: str
    seed: int

    def line(self) -> str:
        return (
            f"device={self.device} ({self.device_name}) | class={self.hardware} | "
            f"CPU threads={self.threads} | "
            f"torch {self.torch} | transformers {self.transformers} | datasets {self.datasets} | "
            f"python {self.python} | profile={self.profile} | seed={self.seed}"
        )


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def provenance(device: torch.device | str | None = None, profile: str | None = None, seed: int = 0) -> Provenance:
    """Collect the provenance of this process without changing any state."""
    device = resolve_device(device)
    return Provenance(
        device=str(device),
        device_name=device_name(device),
        hardware=hardware_class(device),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        transformers=_version("transformers"),
        datasets=_version("datasets"),
        python=platform.python_version(),
        profile=check_profile(profile) if profile is not None else current_profile(),
        seed=seed,
    )


def ieee_float32() -> None:
    """Make float32 mean IEEE float32 on GPUs too: no TF32 in matmuls, convolutions or cuDNN RNNs.

    On Ampere and later NVIDIA GPUs, cuDNN runs convolutions and RNNs in TF32 (a 10-bit
    mantissa) by default, which moves results by ~1e-4 and breaks the book's fp32 checks against
    reference implementations (seen on an H100 in chapter 4). Mixed precision is taught
    explicitly (chapter 10) instead. No effect on CPU.

    The precisions are set with the ``fp32_precision`` API, but cuDNN's legacy switch
    ``torch.backends.cudnn.allow_tf32`` (``True`` by default, and not updated by the new API) is
    turned off first: code that still reads the legacy switch, ``torch.export`` among it
    (behind ``torch.onnx.export``, chapter 12), raises a RuntimeError when the legacy switch
    and the new per-operator precisions disagree.
    """
    backends = torch.backends
    if not hasattr(backends.cudnn, "conv") or not hasattr(backends.cudnn.conv, "fp32_precision"):
        backends.cuda.matmul.allow_tf32 = False  # torch before the fp32_precision API
        backends.cudnn.allow_tf32 = False
        return
    with warnings.catch_warnings():  # some torch releases call the legacy switch deprecated
        warnings.filterwarnings("ignore", r".*(TF32|tensorfloat-32)", UserWarning)
        backends.cudnn.allow_tf32 = False  # the legacy switch, so that both APIs agree
    for flag in (backends.cuda.matmul, backends.cudnn.conv, backends.cudnn.rnn):
        flag.fp32_precision = "ieee"


_STATE: dict[str, object] = {}


def setup(seed: int = 0, profile: str | None = None, quiet: bool = False) -> torch.device:
    """Seed everything, pick the device and print one provenance line. Returns the device.

    Every chapter calls this once, right after its imports. ``profile`` defaults to the
    ``DLBOOK_PROFILE`` environment variable (``full`` when unset).
    """
    seed_everything(seed)
    ieee_float32()
    device = pick_device()
    prov = provenance(device, profile, seed)
    _STATE["provenance"] = prov
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not quiet:
        print(prov.line())
    return device


def last_provenance() -> Provenance:
    """The provenance recorded by the last :func:`setup` call (or a fresh one if none ran)."""
    prov = _STATE.get("provenance")
    return prov if isinstance(prov, Provenance) else provenance()
