"""dlbook.modelcache: train once, load afterwards, random state untouched."""

import dataclasses
import json

import pytest
import torch

from dlbook import modelcache


class _Saveable(torch.nn.Linear):
    def save_pretrained(self, folder):
        torch.save(self.state_dict(), f"{folder}/w.pt")


class _Tok:
    def save_pretrained(self, folder):
        (folder / "tok.txt").write_text("tok")


def _load(folder):
    m = _Saveable(3, 2)
    m.load_state_dict(torch.load(folder / "w.pt"))
    return m, (folder / "tok.txt").read_text()


def test_trains_once_then_loads(tmp_path):
    calls = []

    def train():
        calls.append(1)
        torch.manual_seed(1)
        torch.rand(5)
        return _Saveable(3, 2), _Tok(), {"steps": 7}

    torch.manual_seed(123)
    m1, tok, info = modelcache.cached_model("toy", {"a": 1}, train, _load, device="cpu", cache_dir=tmp_path)
    after_first = torch.rand(1)
    torch.manual_seed(123)
    m2, _, info2 = modelcache.cached_model("toy", {"a": 1}, train, _load, device="cpu", cache_dir=tmp_path)
    after_second = torch.rand(1)
    assert calls == [1]
    assert not info["from_cache"] and info2["from_cache"]
    assert info["steps"] == 7 and info["a"] == 1 and tok == "tok"
    torch.testing.assert_close(m1.weight, m2.weight)
    assert torch.equal(after_first, after_second)  # training did not move the global generator
    assert not m2.training
    saved = json.loads((tmp_path / info["path"].split("/")[-1] / "dlbook_info.json").read_text())
    assert saved["steps"] == 7
    assert info2["trained_on"] == saved["trained_on"] == modelcache.trained_on("cpu")
    assert "class=cpu-" in saved["trained_on"] and "threads" in saved["trained_on"]
    del saved["trained_on"]  # a folder written before the machine was recorded
    (tmp_path / info["path"].split("/")[-1] / "dlbook_info.json").write_text(json.dumps(saved))
    _, _, info3 = modelcache.cached_model("toy", {"a": 1}, train, _load, device="cpu", cache_dir=tmp_path)
    assert info3["trained_on"] == "not recorded"


def test_key_changes_with_description_and_rejects_bad_input():
    assert modelcache.cache_key("k", {"a": 1}) != modelcache.cache_key("k", {"a": 2})
    assert modelcache.cache_key("k", {"a": 1, "b": 2}) == modelcache.cache_key("k", {"b": 2, "a": 1})
    with pytest.raises(ValueError):
        modelcache.cache_key("bad/name", {})
    with pytest.raises(TypeError):
        modelcache.cache_key("k", {"a": object()})


def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path / "c"))
    assert modelcache.cache_root() == tmp_path / "c"


def test_describe_names_what_decides_the_weights():
    from dataclasses import dataclass

    from dlbook.modelcache import describe, library_versions

    @dataclass(frozen=True)
    class Recipe:
        lr: float = 1e-4

    d = describe(3, "smoke", Recipe(), "cpu", teacher="sentiment-smoke-abc")
    assert d == {
        "recipe": 3,
        "profile": "smoke",
        "settings": {"lr": 1e-4},
        "teacher": "sentiment-smoke-abc",
        "versions": library_versions(),
        "device_type": "cpu",
    }
    assert describe(3, "smoke", Recipe(lr=2e-4), "cpu") != describe(3, "smoke", Recipe(), "cpu")
    with pytest.raises(TypeError, match="dataclass"):
        describe(3, "smoke", {"lr": 1e-4}, "cpu")
    with pytest.raises(TypeError, match="dataclass"):
        describe(3, "smoke", Recipe, "cpu")


def test_cached_recipe_is_the_accessors_body(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Recipe:
        steps: int = 3

    devices = []

    def train(device):
        devices.append(device)
        return _Saveable(3, 2), _Tok(), {"steps": 3}

    _, _, info = modelcache.cached_recipe(
        "toy", 2, "smoke", Recipe(), train, _load, label="toy model", device="cpu", cache_dir=tmp_path, teacher="t-1"
    )
    want = modelcache.cache_key("toy-smoke", modelcache.describe(2, "smoke", Recipe(), "cpu", teacher="t-1"))
    assert info["path"].endswith(want) and devices == [torch.device("cpu")] and info["teacher"] == "t-1"
    _, _, again = modelcache.cached_recipe(
        "toy", 2, "smoke", Recipe(), train, _load, label="toy model", device="cpu", cache_dir=tmp_path, teacher="t-1"
    )
    assert again["from_cache"] and len(devices) == 1
    with pytest.raises(ValueError, match="profile"):
        modelcache.cached_recipe("toy", 2, "medium", Recipe(), train, _load, label="toy", cache_dir=tmp_path)
    with pytest.raises(TypeError, match="train and load"):
        modelcache.cached_recipe("toy", 2, "smoke", Recipe(), None, _load, label="toy", cache_dir=tmp_path)


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_pruned_accessors_keep_their_cache_keys(monkeypatch, profile):
    """The folder names of chapter 13's and chapter 15's pruned models are what they were before
    the accessors shared :func:`cached_recipe` (readers' caches stay valid)."""
    from dlbook import combined, distill, prune
    from dlbook.finetune import sentiment_key
    from dlbook.modelcache import cache_key, describe

    seen = {}

    def capture(kind, described, train, load, *, device, cache_dir=None, label=None):
        seen[kind] = (cache_key(kind, described), label, device)
        return None, None, {}

    monkeypatch.setattr(modelcache, "cached_model", capture)
    prune.pruned_classifier(profile, device="cpu")
    combined.pruned_student(profile, device="cpu")
    cpu = torch.device("cpu")
    pruned = describe(
        prune.RECIPE_VERSION, profile, prune.PRUNE_SETTINGS[profile], cpu, baseline=sentiment_key(profile, cpu)[0]
    )
    student = describe(
        combined.RECIPE_VERSION,
        profile,
        combined.PRUNED_STUDENT_SETTINGS[profile],
        cpu,
        student=combined.long_student_key(profile, cpu),
    )
    long_settings = dataclasses.replace(
        distill.STUDENT_SETTINGS[profile]["layers"], epochs=combined.LONG_STUDENT_EPOCHS[profile]
    )
    long = describe(
        combined.RECIPE_VERSION,
        profile,
        long_settings,
        cpu,
        teacher=distill.student_key(profile, "layers", True, cpu)["teacher"],
        student_recipe=distill.RECIPE_VERSION,
    )
    assert combined.long_student_key(profile, cpu) == long
    combined.long_student(profile, device="cpu")
    assert seen.pop(f"student-layers-long-{profile}") == (
        cache_key(f"student-layers-long-{profile}", long),
        f"{profile} 3-layer student trained longer",
        cpu,
    )
    assert seen == {
        f"pruned-{profile}": (cache_key(f"pruned-{profile}", pruned), f"{profile} pruned classifier", cpu),
        f"pruned-student-{profile}": (
            cache_key(f"pruned-student-{profile}", student),
            f"{profile} pruned distilled student",
            cpu,
        ),
    }
