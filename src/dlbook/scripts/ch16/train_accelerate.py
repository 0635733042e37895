"""Fine-tune the sentiment classifier with Accelerate (dlbook, chapter 16).

python -m accelerate.commands.launch --multi_gpu --num_processes N \
    train_accelerate.py RECIPE.json OUT_DIR
"""

import json
import math
import os
import sys
import time

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import (
    AutoTokenizer,
    DataCollatorWithPadding,
    get_linear_schedule_with_warmup,
)

from dlbook import assets, finetune

cfg, out_dir = json.loads(open(sys.argv[1]).read()), sys.argv[2]
use_cuda = cfg["cuda"]  # one GPU per process, or gloo on the CPU
accelerator = Accelerator(cpu=not use_cuda)  # joins the launcher's process group
world = accelerator.num_processes

tokenizer = AutoTokenizer.from_pretrained(assets.minilm_path())
train = assets.rotten_tomatoes()["train"].select(range(cfg["n_train"]))
train = finetune.tokenize_dataset(train, tokenizer, cfg["max_length"])
torch.manual_seed(cfg["seed"])
model = finetune.new_classifier(  # MiniLM + a fresh 2-label head (chapter 9)
    hidden_dropout_prob=cfg["dropout"],
    attention_probs_dropout_prob=cfg["dropout"],
)
loader = DataLoader(
    train,
    batch_size=cfg["batch_size"] // world,
    shuffle=True,
    collate_fn=DataCollatorWithPadding(tokenizer, return_tensors="pt"),
    generator=torch.Generator().manual_seed(cfg["seed"]),
)
optimizer = finetune.make_optimizer(model, cfg["lr"], 0.01)
model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
total = cfg["epochs"] * len(loader)  # batches per process, after prepare
scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * total), total)

losses = []
accelerator.wait_for_everyone()
start = time.perf_counter()
for _epoch in range(cfg["epochs"]):
    model.train()
    for batch in loader:  # already on this process's device
        loss = model(**batch).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())
accelerator.wait_for_everyone()
seconds = time.perf_counter() - start
print(
    f"process {accelerator.process_index}/{world}: {len(loader)} steps, "
    f"{accelerator.distributed_type}, {torch.get_num_threads()} thread(s), "
    f"{seconds:.1f} s",
    flush=True,
)
if accelerator.is_main_process:
    weights = accelerator.unwrap_model(model).state_dict()
    torch.save(weights, os.path.join(out_dir, "weights.pt"))
    result = {
        "losses": losses,
        "seconds": seconds,
        "examples": len(loader) * cfg["batch_size"] * cfg["epochs"],
        "world": world,
        "threads": torch.get_num_threads(),
        "backend": str(accelerator.distributed_type),
    }
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f)
