"""The chapter 1 exercise checks pass the reference and fail plausible wrong answers."""

import numpy as np
import torch

from dlbook import exercises
from dlbook.exercises import ch01


def test_all_registered():
    assert exercises.known("ch01") == ["ch01.mean_pool", "ch01.nearest_vote", "ch01.tokens_per_snippet"]


def test_references_pass():
    for key in exercises.known("ch01"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


# ---------------------------------------------------------------- tokens_per_snippet


def _measure(tok, texts):
    return float(np.mean([len(enc.ids) for enc in tok.encode_batch(list(texts))]))


def test_tokens_per_snippet_with_special_tokens_fails():
    from tokenizers import processors

    def wrong(train, evaluation, vocab_size):  # [CLS] ... [SEP] counted as well
        tok = ch01.train_wordpiece(train, vocab_size)
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
        return _measure(tok, evaluation)

    result = exercises.check("ch01.tokens_per_snippet", wrong, verbose=False)
    assert not result and "expected" in result.failure


def test_tokens_per_snippet_cased_fails():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    def wrong(train, evaluation, vocab_size):  # forgets to lowercase
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=list(ch01.SPECIAL_TOKENS), show_progress=False
        )
        tok.train_from_iterator(train, trainer)
        return _measure(tok, evaluation)

    assert not exercises.check("ch01.tokens_per_snippet", wrong, verbose=False)


def test_tokens_per_snippet_trained_on_the_wrong_split_fails():
    def wrong(train, evaluation, vocab_size):  # trains on the snippets it then measures
        return _measure(ch01.train_wordpiece(evaluation, vocab_size), evaluation)

    assert not exercises.check("ch01.tokens_per_snippet", wrong, verbose=False)


def test_tokens_per_snippet_counts_tokens_not_words():
    def wrong(train, evaluation, vocab_size):
        return float(np.mean([len(t.split()) for t in evaluation]))

    assert not exercises.check("ch01.tokens_per_snippet", wrong, verbose=False)


def test_more_vocabulary_fewer_tokens_on_the_toy_corpus():
    corpus = ch01._toy_corpus(np.random.default_rng(1), 200, 260)
    costs = [ch01.tokens_per_snippet(corpus[:200], corpus[200:], v) for v in (60, 150, 600)]
    assert costs[0] > costs[1] > costs[2]


def test_train_wordpiece_checks_its_arguments():
    import pytest

    with pytest.raises(ValueError, match="vocab_size"):
        ch01.train_wordpiece(["a b c"], 3)
    with pytest.raises(TypeError, match="sequence of strings"):
        ch01.train_wordpiece("a single string", 100)


# ---------------------------------------------------------------- nearest_vote


def test_nearest_vote_torch_style_passes():
    def mine(q, keys, labels, k):
        d = torch.cdist(q, keys)  # unit vectors: the smallest distance is the largest dot product
        idx = d.argsort(dim=1)[:, :k]
        return (labels[idx].sum(dim=1) * 2 > k).long()

    assert exercises.check("ch01.nearest_vote", mine, verbose=False)


def test_nearest_vote_ignoring_k_fails():
    def wrong(q, keys, labels, k):  # always the single nearest neighbour
        return labels[(q @ keys.T).argmax(dim=1)].long()

    result = exercises.check("ch01.nearest_vote", wrong, verbose=False)
    assert not result and "k = 3" in result.failure


def test_nearest_vote_farthest_neighbours_fail():
    def wrong(q, keys, labels, k):
        idx = (q @ keys.T).topk(k, dim=1, largest=False).indices
        return (labels[idx].float().mean(1) > 0.5).long()

    assert not exercises.check("ch01.nearest_vote", wrong, verbose=False)


def test_nearest_vote_float_output_fails_on_dtype():
    def wrong(q, keys, labels, k):
        return ch01.nearest_vote(q, keys, labels, k).float()

    result = exercises.check("ch01.nearest_vote", wrong, verbose=False)
    assert not result and "dtype" in result.failure


# ---------------------------------------------------------------- the worked answer of ch01-ex-count


def test_embedding_count_in_the_solution_is_right():
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=3072)
    model = BertModel(config)
    n = sum(p.numel() for p in model.embeddings.parameters())
    assert n == (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * 768 + 2 * 768
    assert n == 23_837_184  # the number the chapter's solution states
