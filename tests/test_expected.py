"""The per-hardware bars of dlbook.expected: set from repeated runs, clear of them, used."""

import re
from pathlib import Path

import pytest

import dlbook
from dlbook import env, expected

ROOT = Path(__file__).resolve().parents[1]


def _prediction_bound(runs, side):
    """One-sided 95 % prediction bound for one more run: mean -/+ t * s * sqrt(1 + 1/n)."""
    import statistics

    from scipy.stats import t

    n, mean, sd = len(runs), statistics.mean(runs), statistics.stdev(runs)
    return mean + side * t.ppf(0.95, n - 1) * sd * (1 + 1 / n) ** 0.5


@pytest.mark.parametrize("exp", expected.EXPECTED.values(), ids=lambda e: e.name)
def test_every_bar_comes_from_two_runs_and_clears_their_spread(exp):
    for hw, bar in exp.at_least.items():
        runs = exp.measured.get(hw, ())
        assert len(runs) >= 2, f"{exp.name}: a bar on {hw} needs two measured runs, has {runs}"
        assert bar <= (1 - expected.MARGIN) * min(runs), (exp.name, hw, bar, runs)
        assert bar <= _prediction_bound(runs, -1), (exp.name, hw, bar, runs, _prediction_bound(runs, -1))
    for hw, bar in exp.at_most.items():
        runs = exp.measured.get(hw, ())
        assert len(runs) >= 2, f"{exp.name}: a bar on {hw} needs two measured runs, has {runs}"
        assert bar >= (1 + expected.MARGIN) * max(runs), (exp.name, hw, bar, runs)
        assert bar >= _prediction_bound(runs, +1), (exp.name, hw, bar, runs, _prediction_bound(runs, +1))


@pytest.mark.parametrize("exp", expected.EXPECTED.values(), ids=lambda e: e.name)
def test_every_expectation_is_used_by_its_chapter(exp):
    (chapter,) = ROOT.glob(f"notebooks/{exp.chapter:02d}_*.py")
    calls = re.findall(r"hardware_headline\(\s*\"(\w+)\"", chapter.read_text())
    assert exp.name in calls, f"{chapter.name} does not report {exp.name} with hardware_headline"


def test_no_chapter_sets_a_plain_bar_for_a_hardware_dependent_number():
    for chapter in ROOT.glob("notebooks/[0-9][0-9]_*.py"):
        for name in re.findall(r"dlbook\.headline\(\s*\"(\w+)\"", chapter.read_text()):
            assert name not in expected.EXPECTED, f"{chapter.name}: {name} needs hardware_headline"


def test_unknown_names_and_classes_are_refused():
    with pytest.raises(KeyError, match="known:"):
        expected.expected("ch99_nothing")
    with pytest.raises(ValueError, match="unknown hardware class"):
        expected.expected("ch12_speedup").bars("avx2")
    with pytest.raises(ValueError, match="unknown hardware classes"):
        expected.Expectation("x", 1, at_least={"tpu": 1.0})


@pytest.fixture
def shown(monkeypatch):
    seen = []
    monkeypatch.setattr(dlbook.display, "_ipython_display", lambda b, m: seen.append((b, m)))
    return seen


def test_chapter_12_on_an_avx2_only_cpu(monkeypatch, shown):
    """The AVX2 branch: the detected instruction sets overridden, as on an AVX2-only laptop."""
    monkeypatch.setenv(env.FEATURES_OVERRIDE, "avx2")
    hw = env.hardware_class("cpu")
    assert hw == "cpu-avx2"
    slowest_avx2_run = min(expected.expected("ch12_speedup").measured["cpu-avx2"])
    assert dlbook.hardware_headline("ch12_speedup", slowest_avx2_run, profile="full", hardware=hw) == slowest_avx2_run
    assert shown[-1][1]["dlbook_headline"]["checked"] and shown[-1][1]["dlbook_headline"]["hardware"] == "cpu-avx2"
    with pytest.raises(AssertionError, match="on cpu-avx2"):
        dlbook.hardware_headline("ch12_speedup", 0.9, profile="full", hardware=hw)  # int8 slower: a real failure
    # the same speed-up on a CPU with VNNI would be a failure: int8 should gain far more there
    monkeypatch.setenv(env.FEATURES_OVERRIDE, "avx2,avx512f,avx512_vnni,avx512_bf16")
    with pytest.raises(AssertionError, match="on cpu-avx512-bf16"):
        dlbook.hardware_headline("ch12_speedup", slowest_avx2_run, profile="full", hardware=env.hardware_class("cpu"))


def test_a_class_without_a_bar_reports_and_says_so(monkeypatch, shown, capsys):
    monkeypatch.setenv(env.FEATURES_OVERRIDE, "none")
    hw = env.hardware_class("cpu")
    assert hw == "cpu-other"
    assert dlbook.hardware_headline("ch12_speedup", 0.5, profile="full", hardware=hw) == 0.5
    meta = shown[-1][1]["dlbook_headline"]
    assert meta["per_class"] and not meta["checked"] and meta["at_least"] is None
    assert "reported and not checked" in capsys.readouterr().out


def test_headline_per_class_bars_are_validated(shown):
    with pytest.raises(ValueError, match="unknown hardware classes"):
        dlbook.headline("x", 1.0, profile="full", at_least={"avx2": 1.0}, hardware="cpu-avx2")
    with pytest.raises(TypeError, match="mapping hardware class"):
        dlbook.headline("x", 1.0, profile="full", at_least="1.0", hardware="cpu-avx2")
    with pytest.raises(ValueError, match="unknown hardware class"):
        dlbook.headline("x", 1.0, profile="full", at_least={"cpu-avx2": 1.0}, hardware="cpu_avx2")
    with pytest.raises(TypeError, match="both bars per hardware class"):
        dlbook.headline("x", 1.0, profile="full", at_least={"cpu-avx2": 1.0}, at_most=10.0, hardware="cpu-other")
    dlbook.headline("x", 0.1, profile="smoke", at_least={"cpu-avx2": 1.0}, hardware="cpu-avx2")  # smoke: finite only
    assert not shown[-1][1]["dlbook_headline"]["checked"]
