"""dlbook.measure: size on disk, latency, scoreboard ratios."""

import time

import pytest
import torch
from torch import nn

from dlbook import measure


def test_saved_size_counts_bytes_on_disk():
    model = nn.Linear(1000, 250)  # 250,250 float32 numbers
    size = measure.saved_size_mb(model)
    assert 1.0 < size < 1.01  # 1.001 MB of weights plus a little pickle framing
    half = measure.saved_size_mb(model.half())
    assert half == pytest.approx(size / 2, rel=0.01)
    assert measure.saved_size_mb(model.state_dict()) == half
    with pytest.raises(TypeError):
        measure.saved_size_mb([1, 2, 3])


def test_fixed_threads_restores():
    before = torch.get_num_threads()
    with measure.fixed_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        with measure.fixed_threads(0):
            pass


def test_latency_times_the_call():
    lat = measure.latency(lambda: time.sleep(0.01), warmup=1, repeats=3)
    assert len(lat.runs_ms) == 3
    assert 9 < lat.median < 200
    assert lat.spread[0] <= lat.median <= lat.spread[1]
    with pytest.raises(ValueError):
        measure.latency(lambda: None, repeats=0)
    with pytest.raises(ValueError):
        measure.latency(lambda: None, warmup=-1)


class _Tok:
    """A stand-in tokenizer: one id per word."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        ids = [[len(w) for w in t.split()][:max_length] for t in texts]
        n = max(map(len, ids))
        return {
            "input_ids": torch.tensor([x + [0] * (n - len(x)) for x in ids]),
            "attention_mask": torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in ids]),
        }


def test_benchmark_batches_shapes_and_errors():
    texts = ["a bb ccc", "dd", "e f g h i"]
    batches = measure.benchmark_batches(_Tok(), texts, batch_sizes=(1, 3), max_length=4)
    assert batches[1]["input_ids"].shape == (1, 3)
    assert batches[3]["input_ids"].shape == (3, 4)  # padded to the longest, truncated to 4
    with pytest.raises(ValueError, match="at least 4 texts"):
        measure.benchmark_batches(_Tok(), texts, batch_sizes=(4,))
    with pytest.raises(ValueError):
        measure.benchmark_batches(_Tok(), [], batch_sizes=(1,))


def _row(name, size, ms, acc):
    return measure.Measurement(name=name, size_mb=size, latency_ms={1: ms / 4, 32: ms}, accuracy=acc, threads=2)


def test_scoreboard_ratios_and_frame():
    board = measure.Scoreboard()
    board.add(_row("fp32", 90.0, 400.0, 0.85))
    board.add(_row("int8", 30.0, 160.0, 0.84))
    r = board.ratios("int8")
    assert r["smaller"] == pytest.approx(3.0)
    assert r["faster@32"] == pytest.approx(2.5)
    assert r["faster@1"] == pytest.approx(2.5)
    assert r["acc_drop_pts"] == pytest.approx(1.0)
    df = board.frame()
    assert list(df.index) == ["fp32", "int8"]
    assert df.loc["fp32", "smaller"] == 1.0
    assert "threads 2" in board.provenance()
    with pytest.raises(ValueError, match="already"):
        board.add(_row("int8", 1, 1, 1))
    with pytest.raises(KeyError):
        board.ratios("nope")
    bad = measure.Measurement("odd", 1.0, {8: 1.0}, 0.5, threads=2)
    with pytest.raises(ValueError, match="same batch sizes"):
        board.add(bad)


def test_scoreboard_named_baseline_must_exist():
    board = measure.Scoreboard(baseline="teacher")
    board.add(_row("student", 30.0, 100.0, 0.8))
    with pytest.raises(ValueError, match="has not been measured"):
        board.ratios("student")


def test_measure_classifier_on_a_tiny_bert():
    from datasets import Dataset
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from dlbook.assets import minilm_path
    from dlbook.finetune import tokenize_dataset

    tok = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
    )
    model = BertForSequenceClassification(cfg)
    texts = ["a fine film", "dull and long", "great fun", "a mess"] * 8
    data = tokenize_dataset(Dataset.from_dict({"text": texts, "label": [1, 0, 1, 0] * 8}), tok, max_length=16)
    batches = measure.benchmark_batches(tok, texts, batch_sizes=(1, 32))
    m = measure.measure_classifier(
        "tiny", model, tok, data, batches, threads=1, warmup=1, repeats=2, val_dataset=data.select(range(8))
    )
    assert set(m.latency_ms) == {1, 32} and all(v > 0 for v in m.latency_ms.values())
    assert 0.0 <= m.accuracy <= 1.0
    assert m.correct.shape == (32,) and m.correct.mean() == pytest.approx(m.accuracy)
    assert m.labels.tolist() == [1, 0, 1, 0] * 8 and m.to_dict()["labels"] == m.labels.tolist()
    assert m.val_accuracy is not None and 0.0 <= m.val_accuracy <= 1.0
    assert m.params == sum(p.numel() for p in model.parameters())
    assert m.size_mb == pytest.approx(measure.saved_size_mb(model))
    assert model.training  # left in the mode it was in


def test_interleaved_calls_alternate_and_validate():
    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: (order.append("b"), time.sleep(0.005))}
    out = measure.interleaved_calls(calls, rounds=3, warmup=1)
    assert set(out) == {"a", "b"} and len(out["a"].runs_ms) == 3
    assert out["b"].median > out["a"].median
    # warm-up per call, then rounds in turns, the order reversed every other round
    assert order == ["a", "a", "b", "b"] + ["a", "b", "b", "a", "a", "b"]
    for bad in (dict(rounds=0), dict(rounds=True), dict(rounds=2, warmup=-1)):
        with pytest.raises(ValueError):
            measure.interleaved_calls(calls, **bad)
    with pytest.raises(ValueError, match="empty"):
        measure.interleaved_calls({}, rounds=1)


def test_interleaved_latency_times_every_model_in_turns():
    calls = []

    class Slow(nn.Module):
        def __init__(self, name, seconds):
            super().__init__()
            self.name, self.seconds = name, seconds
            self.lin = nn.Linear(2, 2)

        def forward(self, input_ids):
            calls.append(self.name)
            time.sleep(self.seconds)
            return input_ids

    models = {"slow": Slow("slow", 0.02), "fast": Slow("fast", 0.005)}
    batches = {1: {"input_ids": torch.zeros(1, 3)}, 4: {"input_ids": torch.zeros(4, 3)}}
    out = measure.interleaved_latency(models, batches, threads=1, rounds={1: 3, 4: 2}, warmup=1)
    assert set(out) == {"slow", "fast"} and set(out["slow"]) == {1, 4}
    assert len(out["slow"][1].runs_ms) == 3 and len(out["fast"][4].runs_ms) == 2
    assert out["slow"][1].median > out["fast"][1].median
    # at batch 1: warm-up (one untimed and one timed call each), then the timed runs in turns, the
    # order reversed every other round
    assert calls[:10] == ["slow", "slow", "fast", "fast", "slow", "fast", "fast", "slow", "slow", "fast"]
    with pytest.raises(ValueError):
        measure.interleaved_latency(models, batches, threads=1, rounds={1: 3})
    with pytest.raises(ValueError):
        measure.interleaved_latency({}, batches, threads=1)


def test_scoreboard_paired_interval_of_the_drop_and_validation_drop():
    import numpy as np

    board = measure.Scoreboard()
    base_correct = np.ones(400, dtype=bool)
    base_correct[:40] = False  # 0.90
    same = base_correct.copy()
    worse = base_correct.copy()
    worse[40:100] = False  # 0.75: 15 points lost
    for name, c, val in (("fp32", base_correct, 0.88), ("same", same, 0.88), ("worse", worse, 0.80)):
        row = _row(name, 10.0, 10.0, float(c.mean()))
        row.correct, row.val_accuracy = c, val
        board.add(row)
    assert not board.compare("same").interval.measurable
    drop = board.compare("worse").interval
    assert drop.diff == pytest.approx(0.15) and drop.low > 0.1
    assert board.ratios("worse")["val_drop_pts"] == pytest.approx(8.0)
    df = board.frame()
    assert df.loc["same", "drop_95ci"] == "[+0.0, +0.0]" and "val_accuracy" in df.columns
    plain = measure.Scoreboard()
    plain.add(_row("a", 1.0, 1.0, 0.5))
    plain.add(_row("b", 1.0, 1.0, 0.5))
    with pytest.raises(ValueError, match="per-example results"):
        plain.compare("b")
    assert "drop_95ci" not in plain.frame().columns


def test_scoreboard_refuses_to_pair_rows_scored_on_different_examples():
    import numpy as np

    board = measure.Scoreboard()
    labels = np.array([0, 1] * 50)
    for name, lab in (("fp32", labels), ("same", labels.copy()), ("other", labels[::-1].copy())):
        row = _row(name, 10.0, 10.0, 0.9)
        row.correct, row.labels = np.arange(100) % 10 != 0, lab
        board.add(row)
    assert not board.compare("same").measurable  # identical results: nothing to tell apart
    with pytest.raises(ValueError, match="different test examples"):
        board.compare("other")


def test_scoreboard_styled_renames_and_formats():
    board = measure.Scoreboard()
    board.add(measure.Measurement("fp32", 100.0, {1: 10.0, 32: 200.0}, 0.9, threads=2, val_accuracy=0.88))
    board.add(measure.Measurement("int8", 25.0, {1: 5.0, 32: 50.0}, 0.89, threads=2, val_accuracy=0.87))
    html = board.styled().to_html()
    for header in ("size (MB)", "ms, batch 32", "× faster, batch 1", "× smaller", "test points lost", "validation accuracy"):
        assert header in html
    assert "4.00" in html and "+1.00" in html  # 100/25 smaller, 0.90-0.89 in points
    assert "nowrap" in html
    sub = board.styled(board.frame()[["smaller"]])
    assert "× smaller" in sub.to_html() and "ms, batch" not in sub.to_html()
    with pytest.raises(TypeError, match="DataFrame"):
        board.styled([1, 2])


def test_scoreboard_plot_legend_names_every_variant():
    import matplotlib

    matplotlib.use("Agg")
    board = measure.Scoreboard()
    board.add(measure.Measurement("fp32", 100.0, {32: 200.0}, 0.9, threads=2))
    board.add(measure.Measurement("int8", 25.0, {32: 50.0}, 0.89, threads=2))
    ax = board.plot(batch_size=32)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fp32, 100 MB", "int8, 25 MB"]
    assert not ax.texts  # no labels beside the markers
    ax = board.plot(batch_size=32, legend="labels")
    assert ax.get_legend() is None and len(ax.texts) == 2
    with pytest.raises(ValueError, match="legend"):
        board.plot(batch_size=32, legend="left")
    with pytest.raises(ValueError, match="batch 1"):
        board.plot(batch_size=1)
    with pytest.raises(ValueError, match="empty"):
        measure.Scoreboard().plot()
