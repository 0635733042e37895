"""dlbook.prune (chapter 13): magnitude masks vs torch.nn.utils.prune, gates, importance, shrink_bert."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from transformers import BertConfig, BertForSequenceClassification

from dlbook import prune


def tiny_bert(
    seed: int = 0, layers: int = 2, heads: int = 4, hidden: int = 16, ffn: int = 24, vocab: int = 50
) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=32,
        num_labels=2,
    )
    return BertForSequenceClassification(config).eval()


def batch(n: int = 3, t: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[0, -3:] = 0  # some padding
    return {"input_ids": ids, "attention_mask": mask}


# --------------------------------------------------------------------------- magnitude masks


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_magnitude_mask_matches_l1_unstructured(sparsity):
    lin = nn.Linear(30, 20)
    ours = prune.magnitude_mask(lin.weight, sparsity)
    torch_prune.l1_unstructured(lin, "weight", amount=sparsity)
    torch.testing.assert_close(ours, lin.weight_mask)
    assert int((ours == 0).sum()) == round(sparsity * 600)


@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_global_masks_match_global_unstructured(sparsity):
    torch.manual_seed(0)
    mods = [nn.Linear(10, 8), nn.Linear(8, 8), nn.Linear(8, 3)]
    with torch.no_grad():
        mods[1].weight.mul_(0.1)  # a layer of small weights loses more
    ours = prune.global_magnitude_masks([m.weight for m in mods], sparsity)
    torch_prune.global_unstructured([(m, "weight") for m in mods], pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    for o, m in zip(ours, mods, strict=True):
        torch.testing.assert_close(o, m.weight_mask)
    assert (ours[1] == 0).float().mean() > (ours[0] == 0).float().mean()


def test_layerwise_mask_is_not_global():
    mods = [nn.Linear(10, 8), nn.Linear(8, 8)]
    with torch.no_grad():
        mods[1].weight.mul_(0.01)
    glob = prune.global_magnitude_masks([m.weight for m in mods], 0.5)
    assert not torch.equal(glob[0], prune.magnitude_mask(mods[0].weight, 0.5))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_sparsity_raises(bad):
    with pytest.raises(ValueError, match="sparsity"):
        prune.magnitude_mask(torch.randn(4, 4), bad)
    with pytest.raises(ValueError, match="sparsity"):
        prune.prune_magnitude(tiny_bert(), bad)


def test_bad_sparsity_type_and_scope():
    with pytest.raises(TypeError):
        prune.magnitude_mask(torch.randn(4, 4), "half")
    with pytest.raises(ValueError, match="scope"):
        prune.prune_magnitude(tiny_bert(), 0.5, scope="row")


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_magnitude_and_remove(scope):
    model = tiny_bert()
    prune.prune_magnitude(model, 0.6, scope=scope)
    assert len(list(prune.iter_pruned_modules(model))) == 12
    assert prune.weight_sparsity(model) == pytest.approx(0.6, abs=0.01)
    if scope == "layer":
        for _, lin in prune.encoder_linears(model):
            assert (lin.weight == 0).float().mean() == pytest.approx(0.6, abs=0.02)
    assert prune.remove_pruning(model) == 12
    assert not list(prune.iter_pruned_modules(model))
    assert prune.weight_sparsity(model) == pytest.approx(0.6, abs=0.01)
    assert all(not hasattr(lin, "weight_mask") for _, lin in prune.encoder_linears(model))


def test_encoder_linears_unknown_layer():
    model = tiny_bert()
    assert len(prune.encoder_linears(model)) == 12
    assert len(prune.encoder_linears(model, [1])) == 6
    with pytest.raises(ValueError, match="unknown layer"):
        prune.encoder_linears(model, [2])
    with pytest.raises(TypeError):
        prune.encoder_linears(nn.Linear(2, 2))


def test_mask_kept_during_training():
    model = tiny_bert()
    prune.prune_magnitude(model, 0.5, scope="global")
    zero = {n: (m.weight == 0).clone() for n, m in prune.encoder_linears(model)}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    out = model(**batch(), labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    opt.step()
    for n, m in prune.encoder_linears(model):
        assert (m.weight[zero[n]] == 0).all()


# --------------------------------------------------------------------------- shrink_bert


def test_shrink_keep_all_is_identity():
    model = tiny_bert()
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(prune.shrink_bert(model)(**x).logits, model(**x).logits)


def test_shrink_equals_gating():
    model = tiny_bert()
    keep_h = [[0, 3], [2]]
    keep_n = [list(range(0, 24, 3)), [5, 6, 7]]
    x = batch()
    small = prune.shrink_bert(model, keep_h, keep_n)
    with torch.no_grad():
        full = model(**x).logits
        with prune.Gates(model) as gates:
            gates.set_from_keep(keep_h, keep_n)
            masked = model(**x).logits
        torch.testing.assert_close(small(**x).logits, masked)
        assert (masked - full).abs().max() > 1e-4 * full.abs().max()  # removing them did change the output
    assert prune.structure(small) == {"heads": [2, 1], "neurons": [8, 3]}
    assert prune.structure(model) == {"heads": [4, 4], "neurons": [24, 24]}  # the original is untouched


def test_gates_all_ones_are_identity_and_removed():
    model = tiny_bert()
    x = batch()
    with torch.no_grad():
        ref = model(**x).logits
        with prune.Gates(model):
            torch.testing.assert_close(model(**x).logits, ref)
        with prune.Gates(model) as g:
            g.heads[0].zero_()
            assert not torch.allclose(model(**x).logits, ref)
        torch.testing.assert_close(model(**x).logits, ref)  # hooks gone


def test_shrink_is_smaller_and_saves_loads(tmp_path):
    from dlbook.measure import saved_size_mb

    model = tiny_bert(hidden=64, heads=4, ffn=256)
    small = prune.shrink_bert(model, [[1, 2]] * 2, [list(range(64))] * 2)
    assert saved_size_mb(small) < saved_size_mb(model)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    small.save_pretrained(tmp_path)
    back = prune.load_pruned_bert(tmp_path)
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(back(**x).logits, small(**x).logits)
    assert back.config.dlbook_pruning == {"heads": [[1, 2]] * 2, "neurons": [list(range(64))] * 2}


def test_shrink_twice_composes_indices(tmp_path):
    model = tiny_bert()
    once = prune.shrink_bert(model, [[1, 2, 3], [0, 1]], None)
    twice = prune.shrink_bert(once, [[0, 2], [1]], {1: [4, 9]})
    assert twice.config.dlbook_pruning["heads"] == [[1, 3], [1]]
    assert twice.config.dlbook_pruning["neurons"][1] == [4, 9]
    direct = prune.shrink_bert(model, [[1, 3], [1]], {1: [4, 9]})
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(twice(**x).logits, direct(**x).logits)


def test_shrink_trains():
    model = prune.shrink_bert(tiny_bert(), [[0], [1, 2]], [[1, 2], [3]])
    model.train()
    out = model(**batch(), labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad.shape == (4, 16)


@pytest.mark.parametrize(
    "heads,neurons,err,match",
    [
        ([[0], []], None, ValueError, "empty"),
        ({2: [0]}, None, ValueError, "unknown layer"),
        ([[0]], None, ValueError, "one index list per layer"),
        ([[0, 4], [1]], None, ValueError, "0..3"),
        ([[0, 0], [1]], None, ValueError, "duplicates"),
        (None, [[0], [24]], ValueError, "0..23"),
        ("all", None, TypeError, "keep_heads"),
        ([[0.5], [1]], None, TypeError, "ints"),
    ],
)
def test_shrink_bad_input(heads, neurons, err, match):
    with pytest.raises(err, match=match):
        prune.shrink_bert(tiny_bert(), heads, neurons)


def test_shrink_refuses_attached_masks():
    model = tiny_bert()
    prune.prune_magnitude(model, 0.5)
    with pytest.raises(ValueError, match="remove_pruning"):
        prune.shrink_bert(model)


# --------------------------------------------------------------------------- importance


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from dlbook import assets

    return AutoTokenizer.from_pretrained(assets.minilm_path())


def _dataset(tokenizer, n=4):
    from datasets import Dataset

    from dlbook.finetune import tokenize_dataset

    texts = ["a fine film", "dull and far too long", "the cast shines in it", "nothing works here"][:n]
    return tokenize_dataset(Dataset.from_dict({"text": texts, "label": [1, 0, 1, 0][:n]}), tokenizer, 16)


def test_importance_is_gradient_times_activation(tokenizer):
    from transformers import DataCollatorWithPadding

    model = tiny_bert(vocab=tokenizer.vocab_size)
    data = _dataset(tokenizer)
    imp = prune.importance_scores(model, data, tokenizer, batch_size=4)
    assert [tuple(s.shape) for s in imp.heads] == [(4,), (4,)]
    assert [tuple(s.shape) for s in imp.neurons] == [(24,), (24,)]
    # by hand, one batch of all 4: neurons of layer 1 get |sum over tokens of dL/da * a|,
    # heads of layer 0 get the same summed over each head's 4 columns of the context
    x = DataCollatorWithPadding(tokenizer, return_tensors="pt")([data[i] for i in range(4)])
    acts = {}
    lin1 = model.bert.encoder.layer[1].output.dense
    lin0 = model.bert.encoder.layer[0].attention.output.dense
    h1 = lin1.register_forward_pre_hook(lambda m, a: acts.update(n=a[0]))
    h0 = lin0.register_forward_pre_hook(lambda m, a: acts.update(h=a[0]))
    logits = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
    h1.remove()
    h0.remove()
    loss = nn.functional.cross_entropy(logits, x["labels"], reduction="sum")
    gn, gh = torch.autograd.grad(loss, [acts["n"], acts["h"]])
    expected_n = (gn * acts["n"]).sum(dim=(0, 1)).abs()
    expected_h = (gh * acts["h"]).sum(dim=(0, 1)).reshape(4, 4).sum(-1).abs()
    torch.testing.assert_close(imp.neurons[1], expected_n.detach(), atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(imp.heads[0], expected_h.detach(), atol=1e-6, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_per_example_importance_is_batch_size_free(tokenizer):
    model = tiny_bert(vocab=tokenizer.vocab_size)
    data = _dataset(tokenizer)
    one_by_one = prune.importance_scores(model, data, tokenizer, batch_size=1)
    per_ex = prune.importance_scores(model, data, tokenizer, batch_size=4, per_example=True)
    per_ex2 = prune.importance_scores(model, data, tokenizer, batch_size=2, per_example=True)
    pooled = prune.importance_scores(model, data, tokenizer, batch_size=4)
    for a, b, c, d in zip(
        per_ex.heads + per_ex.neurons,
        one_by_one.heads + one_by_one.neurons,
        per_ex2.heads + per_ex2.neurons,
        pooled.heads + pooled.neurons,
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)  # per snippet == batches of one
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-4)  # whatever the batch size
        assert bool((a >= d - 1e-6).all())  # sum of |.| >= |sum|
    # signs cancel inside a batch of 4 for at least some units
    assert any(bool((a > d + 1e-6).any()) for a, d in zip(per_ex.neurons, pooled.neurons, strict=True))
    assert all(p.grad is None for p in model.parameters())


def test_importance_needs_labels(tokenizer):
    data = _dataset(tokenizer).remove_columns("labels")
    with pytest.raises(ValueError, match="labels"):
        prune.importance_scores(tiny_bert(vocab=tokenizer.vocab_size), data, tokenizer)


def test_top_k_per_layer():
    scores = [torch.tensor([0.1, 0.9, 0.5, 0.3]), torch.tensor([4.0, 1.0, 3.0, 2.0])]
    assert prune.top_k_per_layer(scores, 2) == [[1, 2], [0, 2]]
    with pytest.raises(ValueError):
        prune.top_k_per_layer(scores, 0)
    with pytest.raises(ValueError):
        prune.top_k_per_layer(scores, 5)


def test_copy_independent():
    model = tiny_bert()
    before = copy.deepcopy(model.state_dict())
    prune.shrink_bert(model, [[0], [0]], [[0], [0]])
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


# --------------------------------------------------------------------------- vocabulary pruning

VOCAB = [
    "[PAD]",
    "[unused0]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "the",
    "film",
    "is",
    "good",
    "bad",
    "dull",
    "fun",
    "plot",
    "##s",
    "a",
    "very",
    "not",
    "and",
    ".",
]


@pytest.fixture
def tiny_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)


def vocab_bert(cls=BertForSequenceClassification, seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=32,
        num_labels=2,
        pad_token_id=0,
    )
    return cls(config).eval()


TRAIN = ["the film is good .", "a very dull plot", "the plots are fun"]  # "are" -> [UNK]


def test_prune_vocabulary_keeps_specials_and_training_tokens(tiny_tokenizer):
    model = vocab_bert()
    small, vmap = prune.prune_vocabulary(model, tiny_tokenizer, TRAIN)
    kept_tokens = tiny_tokenizer.convert_ids_to_tokens(vmap.kept.tolist())
    assert kept_tokens == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "the",
        "film",
        "is",
        "good",
        "dull",
        "fun",
        "plot",
        "##s",
        "a",
        "very",
        ".",
    ]
    assert vmap.old_size == len(VOCAB) and vmap.new_size == 16 and vmap.unk_id == 1
    assert small.config.vocab_size == 16 and small.get_input_embeddings().weight.shape == (16, 16)
    assert model.get_input_embeddings().weight.shape[0] == len(VOCAB)  # the original is untouched
    torch.testing.assert_close(small.get_input_embeddings().weight, model.get_input_embeddings().weight[vmap.kept])
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in model.parameters()) - 4 * 16


def test_pruned_vocabulary_computes_the_same_on_kept_tokens(tiny_tokenizer):
    model = vocab_bert()
    small, vmap = prune.prune_vocabulary(model, tiny_tokenizer, TRAIN)
    texts = ["the film is fun .", "a very good plot"]
    old = tiny_tokenizer(texts, padding=True, return_tensors="pt")
    new = vmap.encode(tiny_tokenizer, texts, padding=True)
    assert not vmap.lost(old["input_ids"]).any()
    with torch.no_grad():
        torch.testing.assert_close(small(**new).logits, model(**old).logits)


def test_dropped_tokens_become_unk(tiny_tokenizer):
    model = vocab_bert()
    small, vmap = prune.prune_vocabulary(model, tiny_tokenizer, TRAIN)
    old = tiny_tokenizer(["not bad and dull"], return_tensors="pt")["input_ids"]
    lost = vmap.lost(old)
    assert lost.tolist() == [[False, True, True, True, False, False]]  # [CLS] not bad and dull [SEP]
    new = vmap.remap(old)
    assert (new[lost] == vmap.unk_id).all()
    # with the dropped words replaced by [UNK] in the original model, the outputs agree
    unk_old = old.masked_fill(lost, tiny_tokenizer.unk_token_id)
    with torch.no_grad():
        torch.testing.assert_close(small(input_ids=new).logits, model(input_ids=unk_old).logits)
    assert not vmap.lost(torch.tensor([[tiny_tokenizer.unk_token_id]])).any()  # [UNK] itself was not lost


def test_min_count_keeps_frequent_tokens_only(tiny_tokenizer):
    _, vmap = prune.prune_vocabulary(vocab_bert(), tiny_tokenizer, TRAIN, min_count=2)
    assert tiny_tokenizer.convert_ids_to_tokens(vmap.kept.tolist()) == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "the",
        "plot",
    ]
    counts = prune.token_counts(tiny_tokenizer, TRAIN)
    assert counts.shape == (len(VOCAB),) and int(counts[tiny_tokenizer.cls_token_id]) == 3


def test_vocab_map_survives_save_pretrained(tiny_tokenizer, tmp_path):
    small, vmap = prune.prune_vocabulary(vocab_bert(), tiny_tokenizer, TRAIN)
    small.save_pretrained(tmp_path / "m")
    back = BertForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    again = prune.VocabMap.from_config(back.config)
    torch.testing.assert_close(again.old_to_new, vmap.old_to_new)
    ids = vmap.encode(tiny_tokenizer, ["the film is good ."])
    with torch.no_grad():
        torch.testing.assert_close(back(**ids).logits, small(**ids).logits)
    with pytest.raises(ValueError, match="not pruned"):
        prune.VocabMap.from_config(vocab_bert().config)
    with pytest.raises(ValueError, match="already pruned"):
        prune.prune_vocabulary(small, tiny_tokenizer, TRAIN)


def test_prune_vocabulary_slices_a_tied_mlm_head(tiny_tokenizer):
    from transformers import BertForMaskedLM

    model = vocab_bert(BertForMaskedLM)
    small, vmap = prune.prune_vocabulary(model, tiny_tokenizer, TRAIN)
    ids = tiny_tokenizer(["the [MASK] is good ."], return_tensors="pt")
    with torch.no_grad():
        old = model(**ids).logits  # (1, T, V_old)
        new = small(**vmap.remap_batch(ids)).logits  # (1, T, V_new)
    assert new.shape[-1] == vmap.new_size
    torch.testing.assert_close(new, old[..., vmap.kept])
    assert small.get_output_embeddings().weight is small.get_input_embeddings().weight


def test_prune_vocabulary_on_a_student_with_projected_embeddings(tiny_tokenizer):
    from dlbook.distill import fold_embeddings, set_embedding_mode

    teacher = vocab_bert()
    student = prune.copy.deepcopy(teacher)
    set_embedding_mode(student, "project", teacher)
    small, vmap = prune.prune_vocabulary(student, tiny_tokenizer, TRAIN)
    ids = tiny_tokenizer(["the film is fun ."], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(small(**vmap.remap_batch(ids)).logits, student(**ids).logits)
    fold_embeddings(small)
    assert small.get_input_embeddings().weight.shape == (vmap.new_size, 16)


def test_remap_dataset(tiny_tokenizer):
    from datasets import Dataset

    ds = Dataset.from_dict({"input_ids": tiny_tokenizer(["not the film", "a fun plot"])["input_ids"], "labels": [0, 1]})
    _, vmap = prune.prune_vocabulary(vocab_bert(), tiny_tokenizer, TRAIN)
    out = vmap.remap_dataset(ds)
    assert out["input_ids"] == [vmap.remap(torch.tensor(r)).tolist() for r in ds["input_ids"]]
    assert out["labels"] == [0, 1]


def test_prune_vocabulary_rejects_bad_input(tiny_tokenizer):
    model = vocab_bert()
    with pytest.raises(ValueError, match="texts"):
        prune.prune_vocabulary(model, tiny_tokenizer, [])
    with pytest.raises(ValueError, match="texts"):
        prune.prune_vocabulary(model, tiny_tokenizer, "the film")
    with pytest.raises(ValueError, match="min_count"):
        prune.prune_vocabulary(model, tiny_tokenizer, TRAIN, min_count=0)
    with pytest.raises(ValueError, match="max_length"):
        prune.prune_vocabulary(model, tiny_tokenizer, TRAIN, max_length=1)
    with pytest.raises(ValueError, match="rows"):
        prune.prune_vocabulary(tiny_bert(), tiny_tokenizer, TRAIN)  # 50 rows vs 20 tokens
    _, vmap = prune.prune_vocabulary(model, tiny_tokenizer, TRAIN)
    with pytest.raises(ValueError, match="original ids"):
        vmap.remap(torch.tensor([len(VOCAB)]))
    with pytest.raises(TypeError, match="integer"):
        vmap.remap(torch.tensor([1.0]))


def test_wrapped_model_takes_original_ids(tiny_tokenizer):
    model = vocab_bert()
    small, vmap = prune.prune_vocabulary(model, tiny_tokenizer, TRAIN)
    wrapped = vmap.wrap(small)
    ids = tiny_tokenizer(["the film is fun .", "not bad"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(wrapped(**ids).logits, small(**vmap.remap_batch(ids)).logits)
    assert "old_to_new" in wrapped.state_dict() and wrapped.config is small.config
    with pytest.raises(ValueError, match="rows"):
        vmap.wrap(model)
    with pytest.raises(ValueError, match="original ids"):
        wrapped(input_ids=torch.tensor([[len(VOCAB)]]))
