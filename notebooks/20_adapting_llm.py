# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# (ch20)=
# # 20. Adapting and shrinking an LLM
#
# Chapter 17 opened SmolLM2-135M-Instruct and chapter 18 prompted it. This chapter changes it in
# two ways. First we **adapt** it: instruction tuning {cite}`wei2022finetuned` on a small set
# of requests the book builds from its own review snippets, with LoRA adapters
# {cite}`hu2022lora` trained through the `peft` library, the loss counted on the answer tokens
# only; we measure the task before and after on held-out snippets, merge the adapters into the
# weights and save the result. Then we **shrink** it: the model ships as a GGUF file
# {cite}`gguf2023spec` in 4-bit blocks; we decode that format by hand and match the `gguf`
# library bit for bit, write our own 4- and 8-bit block quantizers, and measure perplexity and
# size side by side.
#
# By the end of this chapter you can
#
# 1. turn labelled data into chat-formatted instruction examples whose loss counts only the
#    answer tokens, and check the labels;
# 2. train LoRA adapters on a causal LM with `peft`, compare the task metric before and after
#    with a paired interval, merge the adapters and verify that the merged model computes the
#    same logits;
# 3. read GGUF's Q4_1 and Q8_0 blocks byte by byte and dequantize them exactly;
# 4. quantize weights to 4 and 8 bits per block yourself and measure what each costs in
#    perplexity and saves in size, and say what a measurement on already-quantized weights can
#    and cannot show.

# %% tags=["remove-cell"]
# In Colab, install the book's helpers and offline assets first (nothing happens
# elsewhere).
import sys

if "google.colab" in sys.modules:
    import subprocess

    repo = "git+https://github.com/dlbook-verified/deep-learning-verified"
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"dlbook[assets] @ {repo}"], check=True)
    subprocess.run([sys.executable, "-m", "dlbook.colab"], check=True)

# %%
import math
import os
import tempfile
from pathlib import Path

import gguf
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from peft import LoraConfig
from transformers import AutoTokenizer, LlamaForCausalLM

import dlbook
import dlbook.exercises
import dlbook.lora
from dlbook import assets, instruct, stats
from dlbook import gguf_quant as gq
from dlbook.nn.llama import tiny_config

device = dlbook.setup(seed=0)

# %% tags=["parameters", "hide-input"]
profile = os.environ.get("DLBOOK_PROFILE", "full")

# %% tags=["hide-input"]
sizes = dlbook.by_profile(
    profile,
    smoke=dict(
        lora_model="tiny",  # a small random Llama: the same checks, meaningless numbers
        steps=2,
        batch_size=2,
        eval_every=2,
        n_val=8,
        n_test=8,
        n_ppl=2,
        lr=2e-3,
        n_requant=4,
    ),
    full=dict(
        # lora_model: the model tuned in 20.2 to 20.7; 20.8 to 20.10 always use SmolLM2
        lora_model="real",  # SmolLM2 ("tiny": a small random Llama with its vocabulary)
        steps=20,  # LoRA training steps
        batch_size=4,  # training conversations per step
        eval_every=5,  # steps between validation scores, each a checkpoint
        n_val=64,  # validation snippets scoring the base model and each checkpoint
        n_test=160,  # test snippets scoring the model before and after tuning (20.6)
        n_ppl=64,  # test snippets scoring each version's perplexity (20.10)
        lr=2e-3,  # learning rate of the adapters (AdamW)
        n_requant=None,  # Q4_1/Q8_0 tensors of the file re-quantized (20.9); None: all
    ),
)
sizes

# %% [markdown]
# ## 20.1 An instruction set from the book's own data
#
# An instruction-tuned model is trained on conversations: a user's request and the answer the
# assistant should give. We build such conversations from the Rotten Tomatoes snippets
# {cite}`pang2004sentimental` (research use only): the request is chapter 18's question, "Is the
# sentiment of this movie review positive or negative? Answer with one word.", followed by the
# snippet; the answer is `positive` or `negative`. The answer is checkable, which is what lets us
# measure the tuning.

# %%
tok = AutoTokenizer.from_pretrained(assets.smollm2_folder())  # with its chat template
reviews = assets.rotten_tomatoes()
words = instruct.SENTIMENT_WORDS  # {1: "positive", 0: "negative"}
review = reviews["train"][0]
example = instruct.encode_example(
    tok, instruct.sentiment_request(review["text"]), words[review["label"]]
)
print(tok.decode(example["input_ids"]))

# %% [markdown]
# The text is the chat template of chapter 18 with the assistant's turn filled in: the answer
# word, then `<|im_end|>`, the token at which generation stops. The model must learn to produce
# the answer *and* to stop.
#
# ## 20.2 Loss on the answer only
#
# The request is context, not something to imitate. PyTorch's `cross_entropy` skips targets
# equal to $-100$ (its default `ignore_index`), and the loss of Hugging Face's causal language
# models keeps that convention; so each prompt token gets the label $-100$ and each answer
# token its own id. With $A$ the set of answer positions, the loss is
#
# $$
# \mathcal{L} = -\frac{1}{|A|} \sum_{t \in A} \log p_\theta(x_t \mid x_{<t}) .
# $$ (eq-answer-loss)

# %%
n_prompt = example["n_prompt"]
labels = np.array(example["labels"])
ids = np.array(example["input_ids"])
assert (labels[:n_prompt] == -100).all()  # every prompt token ignored
assert (labels[n_prompt:] == ids[n_prompt:]).all()  # every answer token counted
assert (labels[n_prompt:] != -100).all()
print(
    f"{len(ids)} tokens: {n_prompt} prompt tokens with label -100, answer tokens",
    tok.convert_ids_to_tokens(ids[n_prompt:].tolist()),
)
full_chat = tok.apply_chat_template(
    instruct.sentiment_request(review["text"])
    + [{"role": "assistant", "content": words[review["label"]]}],
    tokenize=True,
    return_dict=True,
)["input_ids"]
assert list(full_chat[: len(ids)]) == ids.tolist()  # the same tokens the template makes

# %% [markdown]
# The prompt and answer tokens agree with the template's own rendering of the whole
# conversation. A batch is right-padded; padding also gets label $-100$, so it never counts.
#
# Only the positions in $A$ need logits at all: `instruct.answer_loss` runs the decoder body on
# the whole sequence but the output layer (49,152 words wide) only where a target counts. It
# must equal the model's own loss from the same labels, and have the same gradient:

# %%
if sizes["lora_model"] == "real":
    model = assets.smollm2()[0].to(device)
else:
    tiny = tiny_config(vocab_size=len(tok), max_position_embeddings=256)
    model = LlamaForCausalLM(tiny).to(device).eval()
train = reviews["train"]


def make_batch(rows):
    """Tokenized, right-padded conversations with answer-only labels."""
    examples = [
        instruct.encode_example(
            tok, instruct.sentiment_request(r["text"]), words[r["label"]]
        )
        for r in rows
    ]
    batch = instruct.collate(examples, tok.pad_token_id)
    return {k: v.to(device) for k, v in batch.items()}


check_batch = make_batch([train[i] for i in range(4)])
with torch.no_grad():
    ours = instruct.answer_loss(model, check_batch)
    ref = model(**check_batch).loss  # Hugging Face's shifted cross-entropy with -100
torch.testing.assert_close(ours, ref)
print(f"answer-only loss {ours.item():.4f} = model's own loss {ref.item():.4f}")
norm = model.model.norm.weight  # (d,): the last norm's gain, one parameter to compare
g_ours = torch.autograd.grad(instruct.answer_loss(model, check_batch), norm)[0]
g_ref = torch.autograd.grad(model(**check_batch).loss, norm)[0]
torch.testing.assert_close(g_ours, g_ref)  # and the same gradient

# %% [markdown]
# ## 20.3 LoRA adapters with `peft`
#
# Chapter 10 wrote LoRA by hand: a frozen weight $W$ gets a trainable update
# $\frac{\alpha}{r} B A$ with $A \in \mathbb{R}^{r \times d_{in}}$, $B \in \mathbb{R}^{d_{out}
# \times r}$, $B$ initialised to zero. Here `peft` puts adapters of rank 8 on the query and value
# projections of every layer, as in the LoRA paper. Since $B = 0$ at first, the adapted model
# must start out computing exactly what the base model computes.

# %%
probe = {k: check_batch[k] for k in ("input_ids", "attention_mask")}
with torch.no_grad():
    base_logits = model(**probe).logits  # (B, T, vocab)
lora_config = LoraConfig(
    r=8,
    lora_alpha=16,
    lora_dropout=0.0,
    target_modules=["q_proj", "v_proj"],
    task_type="CAUSAL_LM",
)
peft_model = dlbook.lora.add_peft_lora(model, lora_config)  # peft.get_peft_model
n_train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
n_all = sum(p.numel() for p in peft_model.parameters())
with torch.no_grad():
    start_logits = peft_model(**probe).logits
assert torch.equal(start_logits, base_logits)  # B = 0: nothing changed yet
print(f"trainable: {n_train:,} of {n_all:,} parameters ({n_train / n_all:.2%})")
dlbook.glue("lora_params", f"{n_train:,}")
dlbook.glue("lora_share", f"{n_train / n_all:.2%}")

# %% [markdown]
# {glue:text}`lora_params` parameters train, {glue:text}`lora_share` of the model.
#
# ## 20.4 The task before tuning
#
# What does the model answer? Greedy decoding's first answer token is the arg-max of the logits
# at the end of the prompt; `instruct.last_prompt_logits` computes them for a batch of requests.
# We score two things per snippet:
#
# - **exact answer**: the greedy first token is the right word (`positive` or `negative`):
#   the model starts its answer with the requested word, and the word is right;
# - **two-way choice**: of the two answer words, the right one has the higher logit, whatever
#   the model would have said; this asks whether the model *separates* the classes, leaving
#   the form aside.
#
# The validation split chooses the checkpoint below; the test split chooses nothing, it is only
# reported.

# %%
word_ids = [
    tok(words[0], add_special_tokens=False).input_ids,
    tok(words[1], add_special_tokens=False).input_ids,
]
assert all(len(w) == 1 for w in word_ids)  # each answer word is one token
neg_id, pos_id = word_ids[0][0], word_ids[1][0]
val = reviews["validation"].select(range(sizes["n_val"]))
test = reviews["test"].select(range(sizes["n_test"]))


def score(m, split):
    """Per-snippet correctness: (exact answer, two-way choice), each a bool array."""
    m.eval()
    requests = [instruct.sentiment_request(t) for t in split["text"]]
    logits = instruct.last_prompt_logits(m, tok, requests, batch_size=16)  # (N, vocab)
    y = np.array(split["label"])
    right = np.where(y == 1, pos_id, neg_id)
    exact = logits.argmax(-1).numpy() == right
    choice = (logits[:, pos_id] > logits[:, neg_id]).numpy().astype(int) == y
    return exact, choice, logits


val_before = score(peft_model, val)  # B = 0: the base model's answers
top = tok.convert_ids_to_tokens(val_before[2].argmax(-1).tolist())
print(
    f"validation, before: exact {val_before[0].mean():.3f}, "
    f"two-way {val_before[1].mean():.3f}"
)
print(
    "most frequent first answer tokens:",
    pd.Series(top).value_counts().head(3).to_dict(),
)

# %% [markdown]
# ## 20.5 Training
#
# A plain loop: AdamW on the adapter parameters, batches of {glue:text}`batch_size` training
# conversations, the loss of equation {eq}`eq-answer-loss`. Every {glue:text}`eval_every` steps
# we score the validation snippets and keep a copy of the adapters ({glue:text}`lora_params`
# numbers); validation then picks the checkpoint.

# %%
torch.manual_seed(0)
params = [p for p in peft_model.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW(params, lr=sizes["lr"], weight_decay=0.0)
order = np.random.default_rng(0).permutation(len(train))
losses, checkpoints = [], {}
bs = sizes["batch_size"]
for step in dlbook.progress(range(1, sizes["steps"] + 1), desc="LoRA steps"):
    peft_model.train()
    rows = [train[int(i)] for i in order[(step - 1) * bs : step * bs]]
    loss = instruct.answer_loss(peft_model, make_batch(rows))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    if step % sizes["eval_every"] == 0 or step == sizes["steps"]:
        exact, choice, _ = score(peft_model, val)
        adapters = {
            n: p.detach().clone()
            for n, p in peft_model.named_parameters()
            if p.requires_grad
        }
        checkpoints[step] = dict(
            exact=exact.mean(), choice=choice.mean(), state=adapters
        )
pd.DataFrame(
    {s: dict(exact=c["exact"], choice=c["choice"]) for s, c in checkpoints.items()}
).T.rename_axis("step")

# %%
best = max(
    checkpoints,  # best exact rate, then two-way choice, then the earlier step
    key=lambda s: (checkpoints[s]["exact"], checkpoints[s]["choice"], -s),
)
with torch.no_grad():
    for n, p in peft_model.named_parameters():
        if n in checkpoints[best]["state"]:
            p.copy_(checkpoints[best]["state"][n])
print(
    f"loss {losses[0]:.3f} at step 1, {np.mean(losses[-3:]):.3f} over the last 3"
    f" steps; validation picks step {best}"
)
dlbook.glue("batch_size", bs)
dlbook.glue("eval_every", sizes["eval_every"])
dlbook.glue("best_step", best)
dlbook.glue("n_steps", sizes["steps"])

# %%
fig, ax = plt.subplots(figsize=(6.4, 3.4))
ax.plot(
    range(1, len(losses) + 1), losses, marker=".", label="training loss (answer tokens)"
)
ax.set_xlabel("LoRA step")
ax.set_ylabel("loss (nats per answer token)")
right = ax.twinx()
steps = sorted(checkpoints)
right.plot(
    steps,
    [checkpoints[s]["exact"] for s in steps],
    "s--",
    color="C1",
    label="validation: right first word",
)
right.set_ylabel("validation rate")
right.set_ylim(0, 1)
ax.axvline(best, color="grey", linestyle=":")
fig.legend(loc="upper center", ncol=2, fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Figure 20.1.** The training loss on the answer tokens at every LoRA step (left axis) and
# the share of validation prompts answered with the right first word at each checkpoint (right
# axis); the dotted line marks the checkpoint validation picks.

# %% [markdown]
# ## 20.6 Before and after, on the test snippets
#
# The base model (adapters switched off with `disable_adapter()`) and the tuned model score the
# same {glue:text}`n_test` test snippets, so the comparison is paired (chapter 3's
# `stats.compare`: a bootstrap interval and McNemar's test).

# %%
with peft_model.disable_adapter():
    test_before = score(peft_model, test)
test_after = score(peft_model, test)
cmp_exact = stats.compare(test_after[0], test_before[0])
cmp_choice = stats.compare(test_after[1], test_before[1])


def in_form(result):
    """Per snippet: the greedy first token is one of the two words, right or wrong."""
    return np.isin(result[2].argmax(-1).numpy(), [pos_id, neg_id])


cmp_form = stats.compare(in_form(test_after), in_form(test_before))
table = pd.DataFrame(
    {
        "before": [
            in_form(test_before).mean(),
            test_before[0].mean(),
            test_before[1].mean(),
        ],
        "after": [
            in_form(test_after).mean(),
            test_after[0].mean(),
            test_after[1].mean(),
        ],
        "after - before (points, 95 % interval)": [
            c.interval.points() for c in (cmp_form, cmp_exact, cmp_choice)
        ],
    },
    index=["one of the two words", "exact answer", "two-way choice"],
)
first = pd.Series(tok.convert_ids_to_tokens(test_before[2].argmax(-1).tolist()))
shares = first.value_counts(normalize=True)
first_token, first_share = shares.index[0], shares.iloc[0]
print(
    f"before tuning, the most frequent greedy first token: {first_token!r}"
    f" ({first_share:.0%} of the test snippets)"
)
print(cmp_exact.verdict("tuned", "base"))
print(cmp_choice.verdict("tuned", "base"))
table.style.format({"before": "{:.3f}", "after": "{:.3f}"})

# %% tags=["remove-cell"]
dlbook.glue("n_test", sizes["n_test"])
dlbook.glue("exact_before", f"{test_before[0].mean():.3f}")
first_text = tok.convert_tokens_to_string([first_token]).strip()  # 'ĠThe' -> 'The'
dlbook.glue("first_token", first_text or repr(first_token))
dlbook.glue("first_share", f"{first_share:.0%}")
dlbook.glue("choice_before", f"{test_before[1].mean():.3f}")
dlbook.glue("choice_after", f"{test_after[1].mean():.3f}")
dlbook.glue("exact_points", cmp_exact.interval.points())
dlbook.glue("choice_points", cmp_choice.interval.points())
dlbook.glue(
    "choice_verdict",
    cmp_choice.verdict("the tuned model", "the base model", numbers=False),
)
dlbook.glue("form_before", f"{in_form(test_before).mean():.3f}")
dlbook.glue("form_after", f"{in_form(test_after).mean():.3f}")
dlbook.headline("exact_after", float(test_after[0].mean()), profile=profile)  # reported
if profile == "full":  # the form is learnt: a gain of about 70 points on validation
    assert cmp_form.measurable and cmp_form.interval.diff > 0
    assert cmp_exact.measurable and cmp_exact.interval.diff > 0
    assert first_token not in words.values()  # untuned, it does not start with the word

# %% [markdown]
# Before tuning, the greedy first token is one of the two words for {glue:text}`form_before`
# of the test snippets: the most frequent first token is "{glue:text}`first_token`"
# ({glue:text}`first_share` of the snippets), and the exact-answer rate is
# {glue:text}`exact_before`. After {glue:text}`best_step` steps, {glue:text}`form_after` of
# the answers start with one of the two words and the exact-answer rate is
# {glue:text}`exact_after`, a change of {glue:text}`exact_points` points. The exact answer
# needs both the requested form and the right judgement; the two-way choice measures the
# judgement alone. It goes from {glue:text}`choice_before` to {glue:text}`choice_after`
# ({glue:text}`choice_points` points): {glue:text}`choice_verdict`.
#
# ## 20.7 Merge and save
#
# For inference the adapters are folded into the weights, $W' = W + \frac{\alpha}{r}BA$
# (`merge_and_unload`), after which the model is a plain `LlamaForCausalLM` again with no extra
# cost per token. The merged model must compute the logits the adapted one computes.

# %%
with torch.no_grad():
    adapter_logits = peft_model(**probe).logits  # (B, T, vocab)
save_dir = Path(tempfile.mkdtemp(prefix="dlbook-ch20-"))
peft_model.save_pretrained(save_dir / "adapter")  # the adapters alone
merged = peft_model.merge_and_unload()
with torch.no_grad():
    merged_logits = merged(**probe).logits
torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-4, rtol=1e-4)
merged.save_pretrained(save_dir / "merged")
reloaded = LlamaForCausalLM.from_pretrained(save_dir / "merged").eval()
with torch.no_grad():
    torch.testing.assert_close(reloaded(**probe).logits, merged_logits)
adapter_mb = sum(f.stat().st_size for f in (save_dir / "adapter").iterdir()) / 1e6
merged_mb = sum(f.stat().st_size for f in (save_dir / "merged").iterdir()) / 1e6
diff = (merged_logits - adapter_logits).abs().max().item()
print(
    f"merged vs adapter logits: max |diff| = {diff:.1e}; saved adapter"
    f" {adapter_mb:.1f} MB, merged model {merged_mb:.1f} MB"
)
dlbook.glue("merge_diff", f"{diff:.0e}")
dlbook.glue("adapter_mb", f"{adapter_mb:.1f}")
dlbook.glue("merged_mb", f"{merged_mb:,.0f}")

# %% [markdown]
# The merged model's logits match the adapted model's to {glue:text}`merge_diff` (float32
# rounding: $Wx + \frac{\alpha}{r}BAx$ and $(W + \frac{\alpha}{r}BA)x$ add in a different order),
# and the saved copy reloads to the same logits. The adapters alone take
# {glue:text}`adapter_mb` MB on disk, the merged model {glue:text}`merged_mb` MB: to serve many
# tasks from one base model, keep one base and an adapter per task.

# %% tags=["remove-cell"]
import shutil

del merged, reloaded, peft_model, model
shutil.rmtree(save_dir, ignore_errors=True)

# %% [markdown]
# ## 20.8 The GGUF Q4_1 block format, by hand
#
# GGUF is llama.cpp's file format {cite}`gguf2023spec`: a header of metadata, then every tensor
# with a type. Our file stores most weight matrices as **Q4_1**: each row is cut into blocks of
# 32 weights, and each block stores
#
# - a scale $d$ and a minimum $m$, both float16 (2 + 2 bytes);
# - 32 four-bit codes $q_j \in \{0, \dots, 15\}$, two per byte (16 bytes);
#
# and means $w_j = d\,q_j + m$. That is 20 bytes per 32 weights, 5 bits per weight. The
# `gguf` library reads the file and hands us each tensor's raw bytes.

# %%
reader = gguf.GGUFReader(str(assets.smollm2_gguf()))
kinds = pd.Series([t.tensor_type.name for t in reader.tensors]).value_counts()
print(kinds.to_dict())
tensor = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
raw = torch.from_numpy(np.array(tensor.data))  # (rows, blocks per row * 20) bytes
print(
    tensor.name,
    tensor.tensor_type.name,
    "shape (in, out) =",
    tensor.shape.tolist(),
    "bytes:",
    tuple(raw.shape),
)

# %% [markdown]
# One block, decoded field by field: bytes 0-1 are $d$, bytes 2-3 are $m$, bytes 4-19 the
# codes. Which four bits belong to which weight? Two orders are plausible: neighbours share a
# byte (weights $2j$, $2j+1$), or byte $j$ holds weight $j$ in its low half and weight $j+16$ in
# its high half. We decode both and let the file decide, by comparing with the float32 weights
# of the converted model.

# %%
block = raw[0, :20]
d = block[0:2].view(torch.float16).float()  # (1,)
m = block[2:4].view(torch.float16).float()  # (1,)
low, high = block[4:] & 0x0F, block[4:] >> 4  # (16,) each
halves = torch.cat([low, high])  # weight j in byte j (low), j + 16 in byte j (high)
neighbours = torch.stack([low, high], dim=-1).flatten()  # weights 2j, 2j + 1 in byte j
print(f"d = {d.item():.3e}, m = {m.item():.3e}, codes (halves): {halves.tolist()}")

model = assets.smollm2()[0].to(device)
w_model = model.model.layers[0].mlp.down_proj.weight.detach().cpu()  # (out, in)
truth = w_model[0, :32]
print("halves order matches the model:    ", torch.equal(d * halves + m, truth))
print("neighbours order matches the model:", torch.equal(d * neighbours + m, truth))
assert torch.equal(d * halves + m, truth) and not torch.equal(d * neighbours + m, truth)

# %% [markdown]
# The half-split order is the file's. The whole tensor, by hand, in a few lines: view the
# bytes as blocks, split the fields, compute $d\,q + m$.


# %%
def dequantize_q4_1(raw):
    blocks = raw.reshape(-1, 20)  # (n_blocks, 20)
    d = blocks[:, 0:2].contiguous().view(torch.float16).float()  # (n, 1)
    m = blocks[:, 2:4].contiguous().view(torch.float16).float()  # (n, 1)
    q = torch.cat([blocks[:, 4:] & 0x0F, blocks[:, 4:] >> 4], dim=1)  # (n, 32)
    return (d * q.float() + m).reshape(raw.shape[0], -1)  # (rows, 32 * blocks per row)


ours = dequantize_q4_1(raw)
theirs = gguf.quants.dequantize(np.array(tensor.data), tensor.tensor_type)
theirs = torch.from_numpy(theirs)  # the library's float32 weights
assert torch.equal(ours, theirs)  # bit for bit
assert torch.equal(ours, w_model)  # and what the converted model holds
assert torch.equal(gq.dequantize_q4_1(raw), ours)  # the packaged version
print(tuple(ours.shape), "identical to gguf.quants.dequantize and to the model")

# %% [markdown]
# Our dequantization equals `gguf.quants.dequantize` bit for bit on all
# {glue:text}`ffn_numel` weights of the tensor, and equals the weight of the converted
# `LlamaForCausalLM`: the "float32 model" of chapters 17 to 20 holds exactly these numbers. The
# packaged `dlbook.gguf_quant` has the same code, and also reads **Q8_0**, the format of the
# token embedding here: a float16 scale and 32 signed 8-bit codes per block, $w_j = d\,q_j$
# (34 bytes per 32 weights, 8.5 bits per weight).

# %%
dlbook.glue("ffn_numel", f"{ours.numel():,}")
dlbook.show(gq.q4_1_fields)

# %% [markdown]
# ## 20.9 Quantizing to 4 and 8 bits per block
#
# Quantizing a block is the reverse, with one choice per format. Q4_1 takes the block's minimum
# as $m$ and spreads the 16 codes over its range, $d = (\max - \min)/15$, $q_j =
# \lfloor (w_j - m)/d + \tfrac12 \rfloor$. Q8_0 is symmetric: $d = \max_j |w_j| / 127$ and
# $q_j = \mathrm{round}(w_j / d)$. Chapter 12 quantized per tensor or per channel; a block of 32
# has its own scale, so one outlier spoils 32 weights, not a whole row. Our quantizers, run on
# one real tensor and on random numbers, must write the bytes `gguf.quants.quantize` writes:

# %%
w_up = model.model.layers[3].mlp.up_proj.weight.detach().cpu()  # (1536, 576)
noise = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
for kind, qtype in (
    ("q4_1", gguf.GGMLQuantizationType.Q4_1),
    ("q8_0", gguf.GGMLQuantizationType.Q8_0),
):
    for name, w in (("up_proj of layer 3", w_up), ("random normal", noise)):
        ours_bytes = gq.quantize(w, kind).numpy()
        assert np.array_equal(ours_bytes, gguf.quants.quantize(w.numpy(), qtype))
        err = (gq.fake_quantize(w, kind) - w).abs().max().item()
        print(f"{kind} {name:>20}: bytes identical to gguf, max |error| = {err:.2e}")
        if (kind, name) == ("q4_1", "up_proj of layer 3"):
            assert err == 0.0  # a Q4_1 tensor of the file comes back exactly

# %% [markdown]
# The bytes agree. The real tensor comes back from 4 bits with an error of exactly zero: its
# float32 values *are* a Q4_1 grid already, $m + d\,q$ per block, so quantizing them again finds
# the same $m$, $d$ and codes. How general is that? We quantize the quantized tensors of the
# file again from their dequantized values, each in its own format, and count the blocks whose
# bytes come back unchanged.

# %%
packed = [t for t in reader.tensors if t.tensor_type.name in ("Q4_1", "Q8_0")]
packed = packed[: sizes["n_requant"]]  # None: all of them
same = total = 0
for t in dlbook.progress(packed, desc="re-quantize", leave=False):
    kind = t.tensor_type.name.lower()
    file_bytes = torch.from_numpy(np.array(t.data))
    again = gq.quantize(gq.dequantize(file_bytes, kind), kind)
    n_bytes = gq.FORMATS[kind]  # bytes per block
    equal = again.reshape(-1, n_bytes) == file_bytes.reshape(-1, n_bytes)
    same += int(equal.all(dim=1).sum())
    total += equal.shape[0]
print(
    f"{len(packed)} tensors: {same:,} of {total:,} blocks re-quantize to the file's"
    " bytes"
)
assert same == total
dlbook.glue("n_blocks", f"{total:,}")
dlbook.glue("n_packed", len(packed))

# %% [markdown]
# All {glue:text}`n_blocks` blocks of the {glue:text}`n_packed` tensors come back: the file is
# a fixed point of the quantizers.
#
# ## 20.10 Perplexity and size, side by side
#
# Four versions of the same model: the fp32 weights as loaded; every matrix in Q8_0 (8.5 bits
# per weight); every matrix in Q4_1 (5 bits); and the file's own mix (the token embedding in
# Q8_0, the other matrices in Q4_1). Norm gains stay float32 in all of them, as in the file.
# Each is scored on {glue:text}`n_ppl` held-out test snippets: perplexity $e^{\bar\ell}$, with
# $\bar\ell$ the mean negative log-likelihood per token (chapter 17).

# %%
texts = reviews["test"]["text"][: sizes["n_ppl"]]
eot = tok.convert_tokens_to_ids("<|endoftext|>")


def snippet_nll(m):
    """Per-snippet summed NLL (nats) and token counts; snippets follow <|endoftext|>."""
    nll, count = [], []
    with torch.no_grad():
        for text in texts:
            seq = torch.tensor([[eot] + tok(text).input_ids], device=device)  # (1, T)
            out = m(input_ids=seq, labels=seq)  # loss: mean over the T - 1 predictions
            nll.append(out.loss.item() * (seq.shape[1] - 1))
            count.append(seq.shape[1] - 1)
    return np.array(nll), np.array(count)


variants = {
    "fp32": None,
    "Q8_0": "q8_0",
    "Q4_1": "q4_1",
    "file's mix": {"embed_tokens": "q8_0", "": "q4_1"},
}
bits = {
    "fp32": 32.0,
    "Q8_0": gq.bits_per_weight("q8_0"),
    "Q4_1": gq.bits_per_weight("q4_1"),
    "file's mix": float("nan"),
}
originals = {n: p.detach().clone() for n, p in gq.quantizable_weights(model)}
results, changed = {}, {}
for name, kind in dlbook.progress(variants.items(), desc="variants", leave=False):
    with torch.no_grad():  # back to the fp32 weights: quantization works in place
        for n, p in gq.quantizable_weights(model):
            p.copy_(originals[n])
    if kind is None:
        nbytes = sum(p.numel() * 4 for p in model.parameters())
    else:
        nbytes = gq.quantize_weights_(model, kind)["total"]
    changed[name] = [
        n for n, p in gq.quantizable_weights(model) if not torch.equal(p, originals[n])
    ]  # matrices that moved
    results[name] = (*snippet_nll(model), nbytes)
with torch.no_grad():
    for n, p in gq.quantizable_weights(model):
        p.copy_(originals[n])
del originals

# %%
ref_nll, counts, _ = results["fp32"]
rows = {}
for name, (nll, _, nbytes) in results.items():
    ratio = stats.bootstrap_ratio(nll - ref_nll, counts)  # paired, per token
    rows[name] = {
        "perplexity": math.exp(nll.sum() / counts.sum()),
        "MB": nbytes / 1e6,
        "bits per weight (matrices)": bits[name],
        "Δ nats/token vs fp32 (95 %)": (
            f"{ratio.diff:+.4f} [{ratio.low:+.4f}, {ratio.high:+.4f}]"
        ),
    }
board = pd.DataFrame(rows).T
board.style.format(
    {"perplexity": "{:.3f}", "MB": "{:.1f}", "bits per weight (matrices)": "{:.1f}"},
    na_rep="mixed",
)

# %% [markdown]
# **Table 20.1.** The same model with its weight matrices stored four ways: perplexity on
# {glue:text}`n_ppl` held-out snippets ({glue:text}`n_ppl_tokens` tokens), size of all
# parameters, and the paired difference in mean NLL per token from the fp32 model with a 95 %
# bootstrap interval over snippets.

# %% tags=["remove-cell"]
ppl = {k: v["perplexity"] for k, v in rows.items()}
mb = {k: v["MB"] for k, v in rows.items()}
dlbook.glue("n_ppl", sizes["n_ppl"])
dlbook.glue("n_ppl_tokens", f"{counts.sum():,}")
for key, name in (
    ("fp32", "fp32"),
    ("q8", "Q8_0"),
    ("q4", "Q4_1"),
    ("mix", "file's mix"),
):
    dlbook.glue(f"ppl_{key}", f"{ppl[name]:.3f}")
    dlbook.glue(f"mb_{key}", f"{mb[name]:.0f}")
file_bytes = sum(int(t.n_bytes) for t in reader.tensors)  # the GGUF file's tensor data
assert results["file's mix"][2] == file_bytes  # our byte count is the file's
assert changed["file's mix"] == []  # the file's formats give back every weight exactly
assert np.array_equal(
    results["file's mix"][0], ref_nll
)  # hence the same NLL, bit for bit
assert changed["Q4_1"] == ["model.embed_tokens.weight"]  # the only matrix Q4_1 moves
q4_ratio = stats.bootstrap_ratio(results["Q4_1"][0] - ref_nll, counts)
q8_ratio = stats.bootstrap_ratio(results["Q8_0"][0] - ref_nll, counts)
for key, r in (("q4", q4_ratio), ("q8", q8_ratio)):
    dlbook.glue(f"{key}_delta", f"{r.diff:+.4f} [{r.low:+.4f}, {r.high:+.4f}]")
dlbook.glue("file_mb", f"{file_bytes / 1e6:.1f}")
size_ratio = mb["fp32"] / mb["Q4_1"]  # weights only: it does not depend on the profile
assert size_ratio > 6.0  # 32 / 5 bits = 6.4, less the float32 norm gains
dlbook.headline(
    "size_ratio_q4", size_ratio, profile=profile, at_least=6.0, fmt="{:.2f}"
)
if profile == "full":  # 64 snippets: the Q8_0 interval spans about +-0.004 nats
    assert -0.01 < q8_ratio.low and q8_ratio.high < 0.01  # within 1/100 nat per token
    assert q4_ratio.low > 0  # Q4_1's embedding costs measurably

# %% [markdown]
# The file's mix changes none of the model's weights, so it scores *exactly* the fp32
# perplexity, {glue:text}`ppl_fp32`, in {glue:text}`mb_mix` MB instead of {glue:text}`mb_fp32`
# MB; {glue:text}`mb_mix` MB is, to the byte, the tensor data of the GGUF file
# ({glue:text}`file_mb` MB). The fp32 model holds exactly the file's values, expanded. Q8_0
# everywhere ({glue:text}`mb_q8` MB) keeps the mean NLL within a hundredth of a nat per token
# of fp32: the difference is {glue:text}`q8_delta` (95 % paired interval). Q4_1 everywhere
# ({glue:text}`mb_q4` MB, {glue:text}`size_ratio_q4` times smaller than fp32) raises it by
# {glue:text}`q4_delta`; every matrix but the token embedding comes back unchanged, so all of
# that is the embedding's, the only matrix that was not on a 4-bit grid already (it arrived in
# Q8_0).
#
# What this does **not** show is the cost of 4 bits for SmolLM2 itself. The file was made from
# SmolLM2's released checkpoint {cite}`allal2025smollm2`; the loss of going from those weights
# to Q4_1 was paid when the file was made, and we never see it, because our "fp32" reference
# is the 4-bit model. Measuring that cost needs the original checkpoint
# (`assets.smollm2(source="hub")`, online), quantized and scored in the same way. The table
# measures what *re*-quantizing costs, which is nothing for weights already on the target
# format's grid. QLoRA {cite}`dettmers2023qlora` combines the two halves of this chapter: it
# trains LoRA adapters on top of a 4-bit base model that stays frozen.

# %% [markdown]
# ## Summary
#
# - Instruction tuning data are conversations in the model's chat template; the prompt tokens
#   get label $-100$, so the loss counts the answer (and the end token) only. Logits are needed
#   only at the answer positions.
# - LoRA adapters on the query and value projections ({glue:text}`lora_params` parameters)
#   taught SmolLM2 to start its answer with the requested word: the exact-answer rate on
#   held-out snippets went from {glue:text}`exact_before` to {glue:text}`exact_after`; merged
#   into the weights, they give the adapted model's logits to within float32 rounding.
# - GGUF's Q4_1 stores 32 weights as a float16 scale and minimum and 32 four-bit codes (low
#   halves first): 5 bits per weight. Decoded by hand, it matches the `gguf` library bit for
#   bit, and re-quantizing the dequantized weights gives back every byte of the file.
# - Weights already on a format's grid come back unchanged when re-quantized (here every
#   matrix but the Q8_0 token embedding, under Q4_1), so re-quantizing a quantized model
#   cannot measure the price of 4 bits: that needs the original weights.

# %% [markdown]
# ## Exercises
#
# :::{exercise}
# :label: ch20-ex-q4-0
# GGUF's older **Q4_0** format keeps only a scale: a block is a float16 $d$ and 16 bytes of
# four-bit codes in the same half-split order, and means $w_j = d\,(q_j - 8)$ (18 bytes per 32
# weights). Write `my_dequantize_q4_0(raw)` for a `torch.uint8` tensor of shape
# `(rows, blocks per row * 18)` returning float32 weights `(rows, blocks per row * 32)`. Then
# compare it with `gguf.quants.dequantize` on a tensor you quantize with
# `gguf.quants.quantize(..., GGMLQuantizationType.Q4_0)`.
# :::


# %%
def my_dequantize_q4_0(raw):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch20.dequantize_q4_0", my_dequantize_q4_0)

# %% [markdown]
# ```{solution-start} ch20-ex-q4-0
# :class: dropdown
# ```


# %% tags=["solution"]
def my_dequantize_q4_0(raw):
    blocks = raw.reshape(-1, 18)  # (n_blocks, 18)
    d = blocks[:, 0:2].contiguous().view(torch.float16).float()  # (n, 1)
    q = torch.cat([blocks[:, 2:] & 0x0F, blocks[:, 2:] >> 4], dim=1)  # (n, 32)
    return (d * (q.float() - 8)).reshape(raw.shape[0], -1)


assert dlbook.exercises.check("ch20.dequantize_q4_0", my_dequantize_q4_0)
w = w_up[:8].numpy()
q4_0 = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_0)
reference = gguf.quants.dequantize(q4_0, gguf.GGMLQuantizationType.Q4_0)
ours_q4_0 = my_dequantize_q4_0(torch.from_numpy(q4_0))  # (8, 576)
assert torch.equal(ours_q4_0, torch.from_numpy(reference))

# %% [markdown]
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch20-ex-block
# The block size trades scale overhead against precision. Write `my_q4_1_fake(w, block)`:
# quantize the float32 matrix `w` (last dimension a multiple of `block`) to Q4_1 with blocks of
# `block` weights, scale and minimum rounded to float16 as in the file but the codes computed
# from the float32 values, and return the dequantized float32 matrix. Then measure, on the token
# embedding (not on a 4-bit grid already), the root-mean-square error for blocks of 16, 32, 64
# and 128, and the bits per weight of each ($4 + 32/\text{block}$).
# :::


# %%
def my_q4_1_fake(w, block):
    raise NotImplementedError  # your code here


dlbook.exercises.check("ch20.q4_1_fake", my_q4_1_fake)

# %% [markdown]
# ```{solution-start} ch20-ex-block
# :class: dropdown
# ```


# %% tags=["solution"]
def my_q4_1_fake(w, block):
    b = w.reshape(-1, block)  # (n_blocks, block)
    lo, hi = b.min(dim=1, keepdim=True).values, b.max(dim=1, keepdim=True).values
    d = (hi - lo) / 15
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = torch.trunc((b - lo) * inv + 0.5).clamp(0, 15)
    d16, m16 = d.half().float(), lo.half().float()
    return (d16 * q + m16).reshape(w.shape)


assert dlbook.exercises.check("ch20.q4_1_fake", my_q4_1_fake)
emb = model.model.embed_tokens.weight.detach().cpu()[:4096]  # (4096, 576)
rmse = {
    b: (my_q4_1_fake(emb, b) - emb).pow(2).mean().sqrt().item()
    for b in (16, 32, 64, 128)
}
print({b: f"rmse {e:.2e}, {4 + 32 / b:.2f} bits/weight" for b, e in rmse.items()})
assert rmse[16] < rmse[32] < rmse[64] < rmse[128]

# %% [markdown]
# Larger blocks cost fewer bits per weight but each block's range grows with its size, so the
# grid coarsens and the error rises steadily. GGML's formats use blocks of 32.
#
# ```{solution-end}
# ```
#
# :::{exercise}
# :label: ch20-ex-prompt-loss
# Suppose the prompt tokens were *not* masked: every token of the conversation is a target.
# On eight training conversations and the untuned model, measure what share of the targets
# the answer is, and what share of the summed loss it carries. What would the gradient mostly
# teach the model?
# :::
#
# ```{solution-start} ch20-ex-prompt-loss
# :class: dropdown
# ```

# %% tags=["solution"]
sample = [train[i] for i in range(8)]
batch = instruct.collate(
    [
        instruct.encode_example(
            tok, instruct.sentiment_request(r["text"]), words[r["label"]]
        )
        for r in sample
    ],
    tok.pad_token_id,
)
with torch.no_grad():  # the untuned model: weights restored after section 20.10
    logits = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
    ).logits.cpu()
targets = batch["input_ids"][:, 1:]  # (B, T-1): every token a target
nll = torch.nn.functional.cross_entropy(
    logits[:, :-1].transpose(1, 2), targets, reduction="none"
)  # (B, T-1)
real = batch["attention_mask"][:, 1:].bool()  # no padding
answer = batch["labels"][:, 1:] != instruct.IGNORE  # the word and <|im_end|>
token_share = (answer.sum() / real.sum()).item()
loss_share = (nll[answer].sum() / nll[real].sum()).item()
print(
    f"{real.sum() / len(sample):.0f} targets per conversation; the answer is "
    f"{token_share:.1%} of the targets and carries {loss_share:.1%} of the loss"
)
dlbook.glue("n_targets", f"{real.sum().item() / len(sample):.0f}")
dlbook.glue("answer_token_share", f"{token_share:.1%}")
dlbook.glue("answer_loss_share", f"{loss_share:.1%}")

# %% [markdown]
# A conversation here has about {glue:text}`n_targets` targets; the answer (the word and
# `<|im_end|>`) is {glue:text}`answer_token_share` of them and carries
# {glue:text}`answer_loss_share` of the untuned model's summed loss. Everything else is the
# system message, the instruction and the review, which the model is never asked to write:
# that is what the gradient would mostly teach. Masking the prompt spends the whole gradient on
# the answer.
#
# ```{solution-end}
# ```

# %% [markdown]
# ## Further reading
#
# - {cite:t}`hu2022lora` introduce LoRA; {cite:t}`dettmers2023qlora` train LoRA adapters on a
#   4-bit quantized base model (QLoRA).
# - {cite:t}`wei2022finetuned` show that instruction tuning on many tasks phrased as
#   instructions improves zero-shot performance on unseen tasks; {cite:t}`ouyang2022training`
#   add human feedback.
# - The GGUF file format and its quantization types are documented with llama.cpp's GGML
#   library {cite}`gguf2023spec`.
