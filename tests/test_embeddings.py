"""dlbook.embeddings: masked mean pooling and embed_texts, their results and their argument checks."""

import json

import pytest
import torch

from dlbook.embeddings import embed_texts, mean_pool, model_max_length

# ---------------------------------------------------------------- mean_pool: results


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_mean_pool_accepts_bool_and_float_masks_and_keeps_dtype():
    hidden = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    want = torch.stack([hidden[i, : int(mask[i].sum())].mean(0) for i in range(3)])
    for m in (mask, mask.bool(), mask.float()):
        got = mean_pool(hidden, m)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want)


def test_mean_pool_nan_in_padding_does_not_leak():
    hidden = torch.tensor([[[1.0, 2.0], [float("nan"), float("inf")]]])  # padding holds garbage
    torch.testing.assert_close(mean_pool(hidden, torch.tensor([[1, 0]])), torch.tensor([[1.0, 2.0]]))


# ---------------------------------------------------------------- mean_pool: shapes


def test_mean_pool_checks_shapes():
    with pytest.raises(ValueError, match="batch, seq, dim"):
        mean_pool(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="attention_mask must be"):
        mean_pool(torch.zeros(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="attention_mask must be"):
        mean_pool(torch.zeros(2, 3, 4), torch.ones(3, 2))


# ---------------------------------------------------------------- mean_pool: types and dtypes


def test_mean_pool_checks_types_and_dtypes():
    with pytest.raises(TypeError, match="hidden must be a torch.Tensor"):
        mean_pool([[[1.0]]], torch.ones(1, 1))
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor"):
        mean_pool(torch.zeros(1, 2, 3), [[1, 1]])
    with pytest.raises(TypeError, match="floating-point"):
        mean_pool(torch.zeros(1, 2, 3, dtype=torch.long), torch.ones(1, 2))
    with pytest.raises(TypeError, match="bool, integer"):
        mean_pool(torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.complex64))


# ---------------------------------------------------------------- mean_pool: mask values


def test_mean_pool_checks_mask_values_and_empty_rows():
    with pytest.raises(ValueError, match="only 0"):
        mean_pool(torch.zeros(1, 3, 4), torch.tensor([[1, 2, 0]]))
    with pytest.raises(ValueError, match="only 0"):
        mean_pool(torch.zeros(1, 3, 4), torch.tensor([[1.0, 0.5, 0.0]]))
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] .*keep no token"):
        mean_pool(torch.zeros(2, 3, 4), torch.tensor([[1, 0, 0], [0, 0, 0]]))


# ---------------------------------------------------------------- mean_pool: NaN


def test_mean_pool_refuses_nan_or_inf_where_the_mask_keeps_a_token():
    hidden = torch.zeros(2, 3, 4)
    hidden[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite .*rows \[1\]"):
        mean_pool(hidden, torch.ones(2, 3))
    hidden[1, 0, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        mean_pool(hidden, torch.ones(2, 3))


# ---------------------------------------------------------------- embed_texts, with a tiny encoder


class _Out:
    def __init__(self, h):
        self.last_hidden_state = h


class _TinyEncoder(torch.nn.Module):
    """Token id -> a fixed vector: enough to check batching, pooling and normalisation."""

    def __init__(self, vocab: int = 50, dim: int = 4, nan: bool = False):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.nan = nan

    def forward(self, input_ids, attention_mask=None, **_):
        h = self.emb(input_ids)
        return _Out(h * float("nan") if self.nan else h)


class _CharTokenizer:
    """Each character is a token (id = ord % 49 + 1), padded with 0: a stand-in for a HF tokenizer."""

    def __init__(self, model_max_length: float = 512, name_or_path: str = ""):
        self.model_max_length = model_max_length
        self.name_or_path = name_or_path
        self.seen_max_length = []  # the max_length of every call

    def __call__(self, texts, padding=True, truncation=True, max_length=128, return_tensors="pt"):
        self.seen_max_length.append(max_length)
        ids = [[ord(c) % 49 + 1 for c in t][:max_length] or [1] for t in texts]
        width = max(len(i) for i in ids)
        input_ids = torch.tensor([i + [0] * (width - len(i)) for i in ids])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])

        class _Batch(dict):
            def to(self, device):
                return _Batch({k: v.to(device) for k, v in self.items()})

        return _Batch(input_ids=input_ids, attention_mask=mask)


def test_embed_texts_batches_agree_and_rows_have_unit_length():
    model, tok = _TinyEncoder(), _CharTokenizer()
    texts = ["abc", "a", "hello there", "xy"]
    one = embed_texts(model, tok, texts, batch_size=1)
    many = embed_texts(model, tok, texts, batch_size=3)
    assert one.shape == (4, 4)
    torch.testing.assert_close(one, many)
    torch.testing.assert_close(one.norm(dim=1), torch.ones(4))
    raw = embed_texts(model, tok, texts, normalize=False)
    torch.testing.assert_close(raw[1], model.emb.weight[ord("a") % 49 + 1].detach())


def test_embed_texts_empty_list():
    assert embed_texts(_TinyEncoder(), _CharTokenizer(), []).shape[0] == 0


def test_embed_texts_checks_its_arguments():
    model, tok = _TinyEncoder(), _CharTokenizer()
    with pytest.raises(TypeError, match="single string"):
        embed_texts(model, tok, "one review")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        embed_texts(model, tok, ["fine", 3])
    with pytest.raises(TypeError, match="sequence of strings"):
        embed_texts(model, tok, iter(["a generator"]))
    with pytest.raises(ValueError, match="batch_size"):
        embed_texts(model, tok, ["a"], batch_size=0)
    with pytest.raises(ValueError, match="max_length"):
        embed_texts(model, tok, ["a"], max_length=2.5)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        embed_texts(lambda **kw: None, tok, ["a"])
    with pytest.raises(TypeError, match="callable"):
        embed_texts(model, None, ["a"])
    with pytest.raises(ValueError, match="NaN"):
        embed_texts(_TinyEncoder(nan=True), tok, ["abc"])


# ---------------------------------------------------------------- embed_texts: where long texts are cut


class _Config:
    def __init__(self, max_position_embeddings):
        self.max_position_embeddings = max_position_embeddings


def test_default_max_length_is_the_sentence_bert_config(tmp_path):
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 7}))
    model, tok = _TinyEncoder(), _CharTokenizer(model_max_length=512, name_or_path=str(tmp_path))
    assert model_max_length(model, tok) == 7
    cut = embed_texts(model, tok, ["abcdefghijkl"], normalize=False)
    torch.testing.assert_close(cut, embed_texts(model, tok, ["abcdefg"], normalize=False))
    assert tok.seen_max_length == [7, 7]


def test_default_max_length_without_sentence_bert_config(tmp_path):
    model = _TinyEncoder()
    model.config = _Config(max_position_embeddings=20)
    assert model_max_length(model, _CharTokenizer(model_max_length=512, name_or_path=str(tmp_path))) == 20
    assert model_max_length(model, _CharTokenizer(model_max_length=9)) == 9
    assert model_max_length(model, _CharTokenizer(model_max_length=int(1e30))) == 20  # "no limit"
    assert model_max_length(_TinyEncoder(), _CharTokenizer(model_max_length=11)) == 11
    with pytest.raises(ValueError, match="pass max_length"):
        model_max_length(_TinyEncoder(), _CharTokenizer(model_max_length=float("inf")))


def test_an_explicit_max_length_wins(tmp_path):
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 7}))
    tok = _CharTokenizer(name_or_path=str(tmp_path))
    embed_texts(_TinyEncoder(), tok, ["abcdefghijkl"], max_length=3)
    assert tok.seen_max_length == [3]


def test_embed_texts_restores_the_training_mode():
    model = _TinyEncoder()
    embed_texts(model, _CharTokenizer(), ["abc"])
    assert model.training  # was training: training again
    model.eval()
    embed_texts(model, _CharTokenizer(), ["abc"])
    assert not model.training
    broken = _TinyEncoder(nan=True)  # in training mode
    with pytest.raises(ValueError, match="NaN"):
        embed_texts(broken, _CharTokenizer(), ["abc"])
    assert broken.training  # restored even when embedding fails
