"""dlbook.seq2seq (chapter 19): the dates task, tokens, teacher forcing, greedy and beam decoding."""

import datetime as dt
import itertools
import math

import pytest
import torch

from dlbook import seq2seq as s2
from dlbook.nn.transformer import EncoderDecoder


def test_formats_write_the_date_and_spans():
    date = dt.date(2021, 3, 3)  # a Wednesday
    texts = {f: s2.format_date(date, f).text for f in s2.DATE_FORMATS}
    assert texts["d month yyyy"] == "3 March 2021"
    assert texts["mon dth, yyyy"] == "Mar 3rd, 2021"
    assert texts["dd/mm/yy"] == "03/03/21"
    assert texts["yyyy.mm.dd"] == "2021.03.03"
    assert texts["wday, d month yyyy"] == "Wednesday, 3 March 2021"
    assert texts["d mon 'yy"] == "3 Mar '21"
    for fmt in s2.DATE_FORMATS:
        ex = s2.format_date(dt.date(1987, 11, 22), fmt)
        assert ex.target == "1987-11-22"
        d0, d1 = ex.spans["day"]
        assert ex.text[d0:d1] in ("22", "22nd")
        y0, y1 = ex.spans["year"]
        assert ex.text[y0:y1] in ("1987", "87")
        m0, m1 = ex.spans["month"]
        assert ex.text[m0:m1].lower() in ("11", "november", "nov")


def test_ordinals():
    assert [s2._ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "23rd",
        "31st",
    ]


def test_two_digit_years_have_one_reading():
    assert s2.format_date(dt.date(1950, 1, 1), "dd/mm/yy").text == "01/01/50"
    assert s2.format_date(dt.date(2049, 12, 31), "dd/mm/yy").text == "31/12/49"
    with pytest.raises(ValueError, match="1950"):
        s2.format_date(dt.date(1949, 12, 31), "dd/mm/yy")
    with pytest.raises(ValueError, match="unknown format"):
        s2.format_date(dt.date(2000, 1, 1), "mm/dd/yy")


def test_splits_are_seeded_and_disjoint():
    a = s2.make_date_splits(300, 100, 100, seed=3)
    b = s2.make_date_splits(300, 100, 100, seed=3)
    assert [e.text for e in a["train"]] == [e.text for e in b["train"]]
    dates = {k: {e.date for e in v} for k, v in a.items()}
    texts = {k: {e.text for e in v} for k, v in a.items()}
    for x, y in itertools.combinations(dates, 2):
        assert not dates[x] & dates[y] and not texts[x] & texts[y]
    assert len(dates["test"]) == 100  # drawn without replacement
    assert (
        s2.make_date_splits(300, 100, 100, seed=4)["train"][0].text != a["train"][0].text
        or s2.make_date_splits(300, 100, 100, seed=4)["train"][1].text != a["train"][1].text
    )


def test_every_input_string_has_one_answer():
    """No string is written for two different dates, over all 36,525 dates and every format."""
    n_days = (s2.LAST_DATE - s2.FIRST_DATE).days + 1
    assert n_days == 36_525
    dates = [s2.FIRST_DATE + dt.timedelta(days=i) for i in range(n_days)]
    answer = {}
    for fmt, pieces in s2.DATE_FORMATS.items():
        writers = [s2._FIELDS[p[1:-1]] if p.startswith("{") else p for p in pieces]
        for date in dates:  # format_date's text, without building a DateExample each time
            text = "".join(w if isinstance(w, str) else w(date) for w in writers)
            assert answer.setdefault(text, date) == date, (text, answer[text], date)
        assert s2.format_date(dates[-1], fmt).text == text  # the shortcut writes format_date's text


def test_splits_bad_input():
    with pytest.raises(ValueError, match="n_train"):
        s2.make_date_splits(0, 1, 1)
    with pytest.raises(ValueError, match="fractions"):
        s2.make_date_splits(1, 1, 1, fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="without replacement"):
        s2.make_date_splits(1, 10_000, 1)
    with pytest.raises(ValueError, match="unknown"):
        s2.make_date_splits(1, 1, 1, formats=["nope"])


def test_vocab_round_trip_and_errors():
    vocab = s2.CharVocab()
    text = "Wed, 06.08.1958"
    ids = vocab.encode(text, bos=True, eos=True)
    assert ids[0] == s2.BOS and ids[-1] == s2.EOS and vocab.decode(ids) == text
    assert vocab.decode([s2.BOS, *vocab.encode("12"), s2.EOS, *vocab.encode("9")]) == "12"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("3 März 2021")
    with pytest.raises(TypeError, match="str"):
        vocab.encode(12)
    src, tgt = s2.encode_examples(s2.make_date_splits(20, 1, 1)["train"], vocab)
    assert src.dtype == tgt.dtype == torch.long and tgt.shape == (20, 12)
    assert (tgt[:, 0] == s2.BOS).all() and (tgt[:, -1] == s2.EOS).all()


def _tiny_model(vocab_size=7, seed=0):
    torch.manual_seed(seed)
    return EncoderDecoder(vocab_size, vocab_size, d_model=16, n_heads=2, d_ff=32, max_len=16).eval()


def test_teacher_forcing_loss_matches_definition():
    model = _tiny_model()
    src = torch.tensor([[3, 4, 5, 0], [6, 5, 4, 3]])
    tgt = torch.tensor([[1, 3, 4, 2, 0], [1, 5, 6, 6, 2]])  # the first target is padded
    logp = torch.log_softmax(model(src, tgt[:, :-1]), -1)
    terms = [-logp[b, t, tgt[b, t + 1]] for b in range(2) for t in range(4) if tgt[b, t + 1] != 0]
    torch.testing.assert_close(s2.teacher_forcing_loss(model, src, tgt), torch.stack(terms).mean())
    torch.testing.assert_close(s2.sequence_logprob(model, src, tgt)[0], -torch.stack(terms[:3]).sum())
    with pytest.raises(ValueError, match="reduction"):
        s2.teacher_forcing_loss(model, src, tgt, reduction="none")
    with pytest.raises(ValueError, match="same number of rows"):
        s2.teacher_forcing_loss(model, src, tgt[:1])


def _exhaustive_best(model, src, max_len):
    """The highest-scoring hypothesis beam search can return, by enumeration: every EOS-ended
    sequence of at most ``max_len`` tokens, and every unfinished one of exactly ``max_len``. The
    score is the model's log-probability (PAD and BOS are never written, and the decoders do not
    renormalise without them), as :func:`dlbook.seq2seq.sequence_logprob` computes it."""
    tokens = range(3, 7)
    cands = [[*body, s2.EOS] for n in range(max_len) for body in itertools.product(tokens, repeat=n)]
    cands += [list(body) for body in itertools.product(tokens, repeat=max_len)]
    scored = []
    for seq in cands:
        tgt = torch.tensor([[s2.BOS, *seq]])
        with torch.no_grad():
            logp = torch.log_softmax(model(src, tgt[:, :-1]), -1)[0]
        scored.append((logp.gather(-1, tgt[0, 1:, None]).sum().item(), seq))
    scored.sort(key=lambda pair: -pair[0])
    assert scored[0][0] > scored[1][0] + 1e-6  # a unique best, so the test is well defined
    return scored[0][1]


def _long_answer_model(seed):
    """A tiny model whose best output is usually longer than one token: EOS made less likely and the
    logits sharpened (an untrained model's best output is the one-token ``[EOS]``)."""
    model = _tiny_model(seed=seed)
    with torch.no_grad():
        model.head.bias[s2.EOS] -= 2.0
        model.head.weight.mul_(4.0)
    return model


def test_beam_with_a_wide_beam_finds_the_best_sequence():
    src = torch.tensor([[3, 5, 6, 4]])
    greedy_missed, long_best = 0, 0
    for seed in range(6):
        model = _long_answer_model(seed)
        best = _exhaustive_best(model, src, 3)
        got = s2.beam_decode(model, src, max_len=3, beam_size=200)[0].tolist()
        assert got[: len(best)] == best and all(t == s2.PAD for t in got[len(best) :])
        greedy = s2.greedy_decode(model, src, max_len=3)[0].tolist()
        greedy_missed += greedy[: len(best)] != best
        long_best += len(best) > 1
    assert long_best >= 4 and greedy_missed >= 2  # the search is not trivial: greedy misses it


def test_beam_size_one_is_greedy_and_greedy_is_stepwise_argmax():
    model = _tiny_model(seed=1)
    src = torch.randint(3, 7, (5, 6))
    greedy = s2.greedy_decode(model, src, max_len=6)
    assert torch.equal(s2.beam_decode(model, src, max_len=6, beam_size=1), greedy)
    memory, pad = model.encode(src[:1])
    prefix = torch.tensor([[s2.BOS]])
    for t in range(greedy.shape[1]):
        logits = model.decode(prefix, memory, pad)[0, -1]
        logits[[s2.PAD, s2.BOS]] = -math.inf
        nxt = int(logits.argmax())
        assert nxt == int(greedy[0, t])
        if nxt == s2.EOS:
            break
        prefix = torch.cat([prefix, torch.tensor([[nxt]])], dim=1)


def test_decoding_bad_input():
    model = _tiny_model()
    src = torch.tensor([[3, 4]])
    with pytest.raises(ValueError, match="beam_size"):
        s2.beam_decode(model, src, max_len=3, beam_size=0)
    with pytest.raises(ValueError, match="max_len"):
        s2.greedy_decode(model, src, max_len=16)  # 17 decoder positions, the model has 16
    with pytest.raises(ValueError, match="int64"):
        s2.greedy_decode(model, src.float(), max_len=3)
    with pytest.raises(TypeError, match="encode"):
        s2.greedy_decode(torch.nn.Linear(2, 2), src, max_len=3)
    with pytest.raises(ValueError, match="method"):
        s2.translate(model, s2.CharVocab(), src, max_len=3, method="sample")
    with pytest.raises(ValueError, match="2 predictions"):
        s2.exact_match(["a", "b"], ["a"])


def test_training_learns_a_small_copy_of_the_task():
    torch.manual_seed(0)
    vocab = s2.CharVocab()
    splits = s2.make_date_splits(512, 64, 1, seed=0, formats=["yyyy.mm.dd"])
    train, val = (s2.encode_examples(splits[k], vocab) for k in ("train", "validation"))
    model = EncoderDecoder(len(vocab), len(vocab), d_model=32, n_heads=2, d_ff=64, max_len=16)
    hist = s2.train_seq2seq(model, train, val, vocab, epochs=3, batch_size=64, lr=3e-3, show_progress=False)
    assert hist.epochs == 3 and 0 <= hist.best_epoch < 3
    assert hist.val_loss[-1] < hist.val_loss[0] and hist.train_loss[-1] < hist.train_loss[0]
    assert hist.val_exact[hist.best_epoch] == max(hist.val_exact)
    with pytest.raises(ValueError, match="epochs"):
        s2.train_seq2seq(model, train, val, vocab, epochs=0)
