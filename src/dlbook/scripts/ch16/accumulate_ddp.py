"""Gradient accumulation and mixed precision under DDP, counted (dlbook, chapter 16).

python -m torch.distributed.run --nproc-per-node 2 accumulate_ddp.py CONFIG.json
"""

import copy
import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from dlbook.distributed import counting_allreduce_hook, counting_bf16_compress_hook

cfg = json.loads(open(sys.argv[1]).read())
k, b = cfg["accumulation_steps"], cfg["micro_batch"]
# joins the gloo group
accelerator = Accelerator(cpu=True, gradient_accumulation_steps=k)
rank, world = dist.get_rank(), dist.get_world_size()

torch.manual_seed(0)  # the same model and the same data in every rank
model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 2))
X = torch.randn(world * k * b, 16)  # (world * k * b, 16): the big batch
y = torch.randint(0, 2, (world * k * b,))
mine = torch.arange(rank * k * b, (rank + 1) * k * b)  # this rank's k micro-batches
micro = [mine[i * b : (i + 1) * b] for i in range(k)]

# the reference: the gradient of the mean loss over the whole big batch, in one process
ref = copy.deepcopy(model)
F.cross_entropy(ref(X), y).backward()
reference = [p.grad for p in ref.parameters()]


def max_diff(grads):
    return max(
        (g - r).abs().max().item() for g, r in zip(grads, reference, strict=True)
    )


def max_rel_diff(grads):
    return max(
        ((g - r).norm() / r.norm()).item()
        for g, r in zip(grads, reference, strict=True)
    )


def accumulate(ddp, use_no_sync):
    """k micro-batches, each loss divided by k; no_sync on all but the last if asked."""
    for i, idx in enumerate(micro):
        if use_no_sync and i < k - 1:
            # forward AND backward inside: gradients add up locally
            with ddp.no_sync():
                (F.cross_entropy(ddp(X[idx]), y[idx]) / k).backward()
        else:  # DDP all-reduces (mean over the ranks) during this backward
            (F.cross_entropy(ddp(X[idx]), y[idx]) / k).backward()
    return [p.grad.clone() for p in ddp.module.parameters()]


out = {"world": world, "k": k}
for name, use_no_sync in [("every step", False), ("no_sync", True)]:
    log = []
    ddp = DDP(copy.deepcopy(model))
    ddp.register_comm_hook(log, counting_allreduce_hook)
    grads = accumulate(ddp, use_no_sync)
    out[name] = {
        "all_reduces": len(log),
        "bytes": sum(e["bytes"] for e in log),
        "max_diff": max_diff(grads),
    }

# Accelerate: accumulate() decides when to sync; backward() divides the loss by k itself
log = []
acc_model = accelerator.prepare(copy.deepcopy(model))  # a DDP model
acc_model.register_comm_hook(log, counting_allreduce_hook)
for idx in micro:
    with accelerator.accumulate(acc_model):
        accelerator.backward(F.cross_entropy(acc_model(X[idx]), y[idx]))
        synced = accelerator.sync_gradients
grads = [p.grad for p in acc_model.module.parameters()]
out["accelerate"] = {
    "all_reduces": len(log),
    "bytes": sum(e["bytes"] for e in log),
    "synced_last": synced,
    "max_diff": max_diff(grads),
}

# mixed precision: bf16 autocast in the forward pass; what does DDP reduce?
hooks = {
    "bf16 autocast": counting_allreduce_hook,
    "bf16 autocast, bf16 all-reduce": counting_bf16_compress_hook,
}
for name, hook in hooks.items():
    log = []
    ddp = DDP(copy.deepcopy(model))
    ddp.register_comm_hook(log, hook)
    idx = mine  # one step on this rank's whole share
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = ddp(X[idx])  # (k * b, 2), bf16
    F.cross_entropy(logits.float(), y[idx]).backward()
    grads = [p.grad for p in ddp.module.parameters()]
    out[name] = {
        "logits_dtype": str(logits.dtype),
        "grad_dtype": str(grads[0].dtype),
        "wire_dtype": log[0]["wire_dtype"],
        "all_reduces": len(log),
        "bytes": sum(e["bytes"] for e in log),
        "max_rel_diff": max_rel_diff(grads),
    }
print(f"rank {rank}/{world}: done", flush=True)
if rank == 0:
    with open(cfg["out"], "w") as f:
        json.dump(out, f)
dist.destroy_process_group()
