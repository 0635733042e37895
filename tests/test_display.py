import pytest

import dlbook
from dlbook import display


@pytest.fixture
def shown(monkeypatch):
    messages = []
    monkeypatch.setattr(display, "_ipython_display", lambda bundle, meta: messages.append((bundle, meta)))
    return messages


def test_glue_emits_a_myst_nb_record(shown):
    dlbook.glue("acc", 0.5)
    bundle, meta = shown[0]
    assert bundle == {"application/papermill.record/text/plain": "0.5"}
    assert meta["scrapbook"] == {"name": "acc", "mime_prefix": "application/papermill.record/"}


def test_glue_refuses_bad_names(shown):
    with pytest.raises(ValueError):
        dlbook.glue("not a name", 1)


def test_headline_asserts_the_bar_in_full_only(shown):
    assert dlbook.headline("acc", 0.99, profile="full", at_least=0.97) == 0.99
    with pytest.raises(AssertionError, match="misses its bar"):
        dlbook.headline("acc", 0.90, profile="full", at_least=0.97)
    with pytest.raises(AssertionError, match="needs <="):
        dlbook.headline("err", 2e-5, profile="full", at_most=1e-5)
    dlbook.headline("acc", 0.10, profile="smoke", at_least=0.97)  # smoke: finite is enough
    bundle, meta = shown[-1]
    assert bundle == {"application/papermill.record/text/plain": "0.100"}
    assert meta["dlbook_headline"]["at_least"] == 0.97


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.9", None, True])
def test_headline_needs_a_finite_number_in_every_profile(shown, bad):
    with pytest.raises(AssertionError, match="finite number"):
        dlbook.headline("x", bad, profile="smoke")


def test_show_renders_source_and_refuses_builtins():
    code = dlbook.show(dlbook.by_profile)
    assert "def by_profile" in code.data
    with pytest.raises(TypeError):
        dlbook.show(len)


def test_glue_unwraps_numpy_and_torch_scalars(monkeypatch):
    import numpy as np
    import torch

    from dlbook import display

    shown = []
    monkeypatch.setattr(display, "_ipython_display", lambda bundle, metadata: shown.append(bundle))
    display.glue("a", np.float64(0.5))
    display.glue("b", torch.tensor(2.5))
    assert [b[display.GLUE_PREFIX + "text/plain"] for b in shown] == ["0.5", "2.5"]
