"""Time torchao's int8 against `torch.ao.quantization.quantize_dynamic` and float32 on this CPU.

Chapter 12 uses the deprecated `quantize_dynamic` because torchao was slower on the CPUs tried;
this script is how that was measured, so the claim can be re-checked when torch or torchao move.
torchao is not one of the book's dependencies: install it next to the book first, e.g.

    .venv/bin/pip install --no-deps --target /tmp/torchao torchao
    PYTHONPATH=/tmp/torchao .venv/bin/python tools/torchao_check.py

It loads chapter 9's full classifier (trained and cached the first time) and prints the median
latency of each variant on 32 test snippets and on one, at 2 threads, the variants timed in turns.
"""

from __future__ import annotations

import copy
import warnings

import torch

from dlbook import assets, finetune, measure, quantize, setup


def main() -> None:
    try:
        import torchao
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
    except ImportError:
        raise SystemExit("torchao is not installed: see this script's docstring") from None
    setup(seed=0)
    model, tokenizer, _ = finetune.sentiment_classifier("full", device="cpu")
    model.eval()
    batches = measure.benchmark_batches(tokenizer, assets.rotten_tomatoes()["test"]["text"][:32], batch_sizes=(32, 1))
    variants = {"float32": model, "quantize_dynamic int8": quantize.int8_dynamic(model, embeddings=False)}
    for name, config in [
        ("torchao int8 dynamic", Int8DynamicActivationInt8WeightConfig()),
        ("torchao int8 weight-only", Int8WeightOnlyConfig()),
    ]:
        quantized = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchao's own deprecation notices; this is a timing script
            quantize_(quantized, config)
        variants[name] = quantized
    print(f"torchao {torchao.__version__} | torch {torch.__version__} | 2 threads | medians of rounds timed in turns")
    timed = measure.interleaved_latency(variants, batches, threads=2, rounds={32: 12, 1: 30})
    at32, at1 = ({name: timed[name][b].median for name in variants} for b in (32, 1))
    for name in variants:
        print(
            f"{name:>26}: batch 32 {at32[name]:7.1f} ms ({at32['float32'] / at32[name]:.2f}x float32) | "
            f"batch 1 {at1[name]:6.2f} ms ({at1['float32'] / at1[name]:.2f}x)"
        )


if __name__ == "__main__":
    main()
