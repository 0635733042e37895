"""Fine-tune the sentiment classifier with Trainer under torchrun (dlbook, chapter 16).

python -m torch.distributed.run --nproc-per-node N train_trainer.py RECIPE.json OUT_DIR
"""

import json
import os
import sys

import torch
from transformers import (
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from dlbook import assets, finetune

cfg, out_dir = json.loads(open(sys.argv[1]).read()), sys.argv[2]
world = int(os.environ.get("WORLD_SIZE", "1"))
use_cuda = cfg["cuda"]  # one GPU per process, or gloo on the CPU
tokenizer = AutoTokenizer.from_pretrained(assets.minilm_path())
train = assets.rotten_tomatoes()["train"].select(range(cfg["n_train"]))
train = finetune.tokenize_dataset(train, tokenizer, cfg["max_length"])
torch.manual_seed(cfg["seed"])
model = finetune.new_classifier(  # MiniLM + a fresh 2-label head (chapter 9)
    hidden_dropout_prob=cfg["dropout"],
    attention_probs_dropout_prob=cfg["dropout"],
)
args = TrainingArguments(
    output_dir=os.path.join(out_dir, "trainer"),
    per_device_train_batch_size=cfg["batch_size"] // world,
    learning_rate=cfg["lr"],
    num_train_epochs=cfg["epochs"],
    weight_decay=0.01,
    warmup_steps=0.1,
    lr_scheduler_type="linear",
    max_grad_norm=1.0,
    seed=cfg["seed"],
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
    use_cpu=not use_cuda,
    ddp_backend="nccl" if use_cuda else "gloo",
    dataloader_pin_memory=use_cuda,
    # the model's loss is a plain mean: do not rescale it (see the text)
    average_tokens_across_devices=False,
)
trainer = Trainer(
    model=model,
    args=args,
    train_dataset=train,
    processing_class=tokenizer,
    data_collator=DataCollatorWithPadding(tokenizer, return_tensors="pt"),
)
metrics = trainer.train().metrics
print(
    f"rank {args.process_index}/{args.world_size}: {trainer.state.global_step} steps, "
    f"{args.parallel_mode}, {torch.get_num_threads()} thread(s), "
    f"{metrics['train_runtime']:.1f} s",
    flush=True,
)
if trainer.is_world_process_zero():
    torch.save(trainer.model.state_dict(), os.path.join(out_dir, "weights.pt"))
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    result = {
        "losses": losses,
        "seconds": metrics["train_runtime"],
        "examples": metrics["train_samples_per_second"] * metrics["train_runtime"],
        "world": args.world_size,
        "threads": torch.get_num_threads(),
        "backend": str(args.parallel_mode),
    }
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f)
