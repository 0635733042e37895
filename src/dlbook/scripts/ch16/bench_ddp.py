"""Throughput, interleaved: 1 process x 2 threads against 2 processes x 1 thread.

dlbook, chapter 16.

python -m torch.distributed.run --nproc-per-node 2 bench_ddp.py RECIPE.json OUT_DIR
"""

import copy
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import AutoTokenizer

from dlbook import assets, finetune
from dlbook.distributed import split_batch

cfg, out_dir = json.loads(open(sys.argv[1]).read()), sys.argv[2]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
assert world == 2, "this benchmark compares one process with two"
B = cfg["batch_size"]

tokenizer = AutoTokenizer.from_pretrained(assets.minilm_path())
texts = assets.rotten_tomatoes()["train"].select(range(cfg["bench_steps"] * B))
batches = []  # the same global batches for both settings, padded like the training runs
for i in range(cfg["bench_steps"]):
    rows = texts.select(range(i * B, (i + 1) * B))
    batch = tokenizer(
        list(rows["text"]),
        truncation=True,
        max_length=cfg["max_length"],
        padding=True,
        return_tensors="pt",
    )
    batch = dict(batch)
    batch["labels"] = torch.tensor(list(rows["label"]))
    batches.append(batch)
torch.manual_seed(cfg["seed"])
model = finetune.new_classifier(  # MiniLM + a fresh 2-label head (chapter 9)
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
single = copy.deepcopy(model)  # rank 0's model for the 1-process setting (no DDP)
single_opt = finetune.make_optimizer(single, cfg["lr"], 0.01)
ddp = DDP(model)
ddp_opt = finetune.make_optimizer(ddp.module, cfg["lr"], 0.01)


def train_step(m, opt, batch):
    m(**batch).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def one_process():  # rank 0 alone, 2 threads; rank 1 waits at the barrier
    if rank == 0:
        torch.set_num_threads(2)
        for batch in batches:
            train_step(single, single_opt, batch)


def two_processes():  # each rank its half of every batch, 1 thread
    torch.set_num_threads(1)
    for batch in batches:  # DDP averages the gradients
        train_step(ddp, ddp_opt, split_batch(batch, world)[rank])


settings = {
    "1 process x 2 threads": one_process,
    "2 processes x 1 thread": two_processes,
}
seconds = {name: [] for name in settings}
idle_cpu = []  # CPU seconds rank 1 spends while it waits for rank 0
names = list(settings)
for r in range(cfg["bench_rounds"] + 1):  # round 0 warms up and is not kept
    order = names if r % 2 == 0 else names[::-1]  # alternate which setting goes first
    for name in order:
        dist.barrier()
        cpu0, start = time.process_time(), time.perf_counter()
        settings[name]()
        dist.barrier()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        if r > 0:
            seconds[name].append(wall)
            if name == names[0] and rank == 1:
                idle_cpu.append(cpu / wall)
idle = torch.tensor([max(idle_cpu, default=0.0)])  # the worst round
dist.broadcast(idle, src=1)
if rank == 0:
    examples = cfg["bench_steps"] * B
    result = {
        "examples_per_s": {k: [examples / s for s in v] for k, v in seconds.items()},
        "rank1_cpu_share_while_waiting": idle.item(),
        "order": names,
    }
    with open(os.path.join(out_dir, "bench.json"), "w") as f:
        json.dump(result, f)
print(
    f"rank {rank}/{world}: {cfg['bench_rounds']} rounds "
    f"of {len(batches)} steps per setting",
    flush=True,
)
dist.destroy_process_group()
