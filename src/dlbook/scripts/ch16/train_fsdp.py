"""Fine-tune the sentiment classifier with FSDP's fully_shard (dlbook, chapter 16).

python -m torch.distributed.run --nproc-per-node N train_fsdp.py RECIPE.json OUT_DIR
"""

import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.utils.data import DataLoader, DistributedSampler
from transformers import (
    AutoTokenizer,
    DataCollatorWithPadding,
    get_linear_schedule_with_warmup,
)

from dlbook import assets, finetune

cfg, out_dir = json.loads(open(sys.argv[1]).read()), sys.argv[2]
use_cuda = cfg["cuda"]  # one GPU per process, or gloo on the CPU
dist.init_process_group("nccl" if use_cuda else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
if use_cuda:
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
else:
    device = torch.device("cpu")

tokenizer = AutoTokenizer.from_pretrained(assets.minilm_path())
train = assets.rotten_tomatoes()["train"].select(range(cfg["n_train"]))
train = finetune.tokenize_dataset(train, tokenizer, cfg["max_length"])
# the same fresh head everywhere (each rank keeps its shard of it)
torch.manual_seed(cfg["seed"])
model = finetune.new_classifier(  # MiniLM + a fresh 2-label head (chapter 9)
    hidden_dropout_prob=cfg["dropout"],
    attention_probs_dropout_prob=cfg["dropout"],
)
# each layer's weights, gradients and Adam states: 1/world of them per rank
for layer in model.bert.encoder.layer:
    fully_shard(layer)
fully_shard(model.to(device))

sampler = DistributedSampler(
    train, num_replicas=world, rank=rank, shuffle=True, seed=cfg["seed"]
)
loader = DataLoader(
    train,
    batch_size=cfg["batch_size"] // world,
    sampler=sampler,
    collate_fn=DataCollatorWithPadding(tokenizer, return_tensors="pt"),
)
optimizer = finetune.make_optimizer(model, cfg["lr"], 0.01)
total = cfg["epochs"] * len(loader)
scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * total), total)
torch.manual_seed(cfg["seed"] + rank)  # dropout masks (if any) differ between ranks

losses = []
dist.barrier()
start = time.perf_counter()
for epoch in range(cfg["epochs"]):
    sampler.set_epoch(epoch)
    model.train()
    for batch in loader:
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()  # FSDP reduce-scatters the gradients here
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)  # sum over the ranks, for the log only
        losses.append(mean_loss.item() / world)
dist.barrier()
seconds = time.perf_counter() - start
print(
    f"rank {rank}/{world}: {len(loader)} steps of {cfg['batch_size'] // world} "
    f"snippets, {torch.get_num_threads()} thread(s), {dist.get_backend()}, "
    f"{seconds:.1f} s",
    flush=True,
)
# all-gathers the shards: every rank takes part
weights = {k: v.full_tensor() for k, v in model.state_dict().items()}
if rank == 0:
    torch.save(weights, os.path.join(out_dir, "weights.pt"))
    result = {
        "losses": losses,
        "seconds": seconds,
        "examples": cfg["epochs"] * len(sampler) * world,
        "world": world,
        "threads": torch.get_num_threads(),
        "backend": dist.get_backend(),
    }
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f)
dist.destroy_process_group()
