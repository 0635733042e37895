"""One data-parallel gradient step, for real (dlbook, chapter 16).

Rank r of N takes the r-th slice of the batch; the gradients are averaged twice, by
hand and by DistributedDataParallel, and must agree.

python -m torch.distributed.run --nproc-per-node N grad_step.py CONFIG.json
"""

import copy
import json
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import AutoTokenizer

from dlbook import assets, finetune
from dlbook.distributed import all_reduce_gradients, split_batch

cfg = json.loads(open(sys.argv[1]).read())
dist.init_process_group("gloo")  # reads RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
rank, world = dist.get_rank(), dist.get_world_size()

tokenizer = AutoTokenizer.from_pretrained(assets.minilm_path())
# the whole batch, padded once
batch = dict(tokenizer(cfg["texts"], padding=True, return_tensors="pt"))
batch["labels"] = torch.tensor(cfg["labels"])
mine = split_batch(batch, world)[rank]  # this rank's slice
torch.manual_seed(0)  # the same fresh head in every rank
model = finetune.new_classifier(  # MiniLM + a fresh 2-label head (chapter 9)
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
model.train()
ddp_model = DDP(copy.deepcopy(model))

# (a) by hand: local backward, then average the gradients with all_reduce
model(**mine).loss.backward()
all_reduce_gradients(model)
# (b) DistributedDataParallel: the all-reduce happens inside backward()
ddp_model(**mine).loss.backward()
pairs = zip(model.named_parameters(), ddp_model.module.parameters(), strict=True)
for (name, p), q in pairs:
    torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)

grads = [p.grad.clone() for p in model.parameters()]
finetune.make_optimizer(model, 1e-4, 0.01).step()  # the same AdamW step in every rank
print(
    f"rank {rank}/{world}: {len(mine['labels'])} snippets, "
    "gradients averaged by hand == DDP's",
    flush=True,
)
if rank == 0:
    weights = [p.detach() for p in model.parameters()]
    torch.save({"grads": grads, "weights": weights}, cfg["out"])
dist.destroy_process_group()
