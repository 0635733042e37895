"""dlbook.ort: export to ONNX, ONNX Runtime's int8 quantization, and the PyTorch-like session."""

import warnings

import numpy as np
import pytest
import torch

from dlbook import env, measure
from dlbook import ort as O


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=500,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    return BertForSequenceClassification(cfg).eval()


def _batch(b=3, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t - 2 :] = 0  # one padded row
    return {
        "input_ids": torch.randint(1, 500, (b, t), generator=g),
        "attention_mask": mask,
        "token_type_ids": torch.zeros(b, t, dtype=torch.long),
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _tiny_bert()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    env.ieee_float32()  # as dlbook.setup() leaves torch: the export must still work
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exporter's known messages are silenced, nothing else is raised
        O.export_classifier(model, path, _batch())
    return model, path


def test_exported_graph_matches_pytorch_at_other_shapes(exported):
    model, path = exported
    session = O.OrtClassifier(path, threads=1)
    batch = _batch(b=5, t=11, seed=1)  # batch and length differ from the export example
    with torch.inference_mode():
        ref = model(**batch).logits
    torch.testing.assert_close(session(**batch).logits, ref, atol=1e-5, rtol=1e-5)
    assert O.onnx_size_mb(path) > 0.1  # the weights are counted (32-wide BERT: about 0.2 MB)


def test_dynamic_and_static_int8_stay_close_and_shrink(exported, tmp_path):
    model, path = exported
    dyn = O.quantize_dynamic_int8(path, tmp_path / "dyn.onnx")
    calib = [_batch(seed=s, t=5 + s) for s in range(3)]  # different lengths: padded to one
    sta = O.quantize_static_int8(path, tmp_path / "sta.onnx", calib, method="percentile")
    batch = _batch(seed=7)
    with torch.inference_mode():
        ref = model(**batch).logits
    for p in (dyn, sta):
        out = O.OrtClassifier(p, threads=1)(**batch).logits
        assert out.shape == ref.shape and out.dtype == torch.float32
        assert (out - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
    assert O.onnx_size_mb(dyn) < O.onnx_size_mb(path)
    with pytest.raises(ValueError, match="method"):
        O.quantize_static_int8(path, tmp_path / "x.onnx", calib, method="entropy!")
    with pytest.raises(ValueError, match="empty"):
        O.quantize_static_int8(path, tmp_path / "x.onnx", [])


def test_session_works_with_the_measurement_helpers(exported):
    model, path = exported
    session = O.OrtClassifier(path, threads=1)
    batches = {1: {k: v[:1] for k, v in _batch().items()}, 3: _batch()}
    timed = measure.interleaved_latency({"pt": model, "ort": session}, batches, threads=1, rounds=2, warmup=1)
    assert set(timed["ort"]) == {1, 3} and all(len(t.runs_ms) == 2 for t in timed["ort"].values())
    m = measure.Measurement("ort", 0.0, {1: 1.0}, 0.5, threads=1, params=0)
    m = O.classifier_measurement(m, session)
    assert m.size_mb == pytest.approx(O.onnx_size_mb(path)) and m.params is None
    with pytest.raises(TypeError, match="OrtClassifier"):
        O.classifier_measurement(m, model)


def test_bad_inputs(exported, tmp_path):
    model, path = exported
    session = O.OrtClassifier(path, threads=1)
    with pytest.raises(ValueError, match="input_ids"):
        session(input_ids=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="token_type_ids"):
        session(**{**_batch(), "token_type_ids": torch.ones(3, 7, dtype=torch.long)})
    with pytest.raises(ValueError, match="same shape"):
        session(input_ids=torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="threads"):
        O.OrtClassifier(path, threads=0)
    with pytest.raises(TypeError, match="path"):
        O.OrtClassifier(3, threads=1)
    with pytest.raises(FileNotFoundError):
        O.onnx_size_mb(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="nn.Module"):
        O.export_classifier(lambda **kw: None, tmp_path / "f.onnx", _batch())
    with pytest.raises(TypeError, match="per_channel"):
        O.quantize_dynamic_int8(path, tmp_path / "d.onnx", per_channel="yes")
    assert np.isfinite(session(**_batch()).logits.numpy()).all()


def test_static_percentile_narrows_the_activation_ranges(exported, tmp_path):
    """A lower percentile clips more: the graph's scales can only shrink, and some must."""
    import onnx
    from onnx import numpy_helper

    _, path = exported
    calib = [_batch(seed=s, t=6) for s in range(3)]

    def scales(percentile):
        dst = O.quantize_static_int8(path, tmp_path / f"p{percentile}.onnx", calib, method="percentile", percentile=percentile)
        graph = onnx.load(str(dst)).graph
        return {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_scale")}

    wide, narrow = scales(100), scales(60)
    assert set(wide) == set(narrow) and wide
    assert all((narrow[k] <= wide[k] * (1 + 1e-6)).all() for k in wide)
    assert any((narrow[k] < 0.9 * wide[k]).any() for k in wide)
    for bad in (50, 101, True, "99"):
        with pytest.raises(ValueError, match="percentile"):
            O.quantize_static_int8(path, tmp_path / "x.onnx", calib, method="percentile", percentile=bad)
