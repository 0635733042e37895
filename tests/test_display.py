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
    assert code.data.startswith("# dlbook.profiles.by_profile")
    with pytest.raises(TypeError):
        dlbook.show(len)


def scaled_sum(x: list[float], scale: float = 1.0) -> float:
    """Sum ``x`` times ``scale``: see :func:`math.fsum` and *Kahan*.

    A second paragraph with ``markup`` that the page does not show.
    """
    if not isinstance(scale, float):
        raise TypeError(f"scale must be a float, got {scale!r}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    total = sum(x)  # the idea
    if total > 1e300:
        raise OverflowError("too large")  # not an argument check: stays
    return total * scale


class Doubler:
    """Doubles its input."""

    factor = 2

    def __call__(self, x: float) -> float:
        """Not shown."""
        return self.factor * x


def long_function() -> int:
    """A long body: collapsed in HTML."""
    n = 0
    n += 0
    n += 1
    n += 2
    n += 3
    n += 4
    n += 5
    n += 6
    n += 7
    n += 8
    n += 9
    n += 10
    n += 11
    n += 12
    n += 13
    n += 14
    n += 15
    n += 16
    n += 17
    n += 18
    n += 19
    n += 20
    n += 21
    n += 22
    n += 23
    n += 24
    n += 25
    n += 26
    n += 27
    n += 28
    n += 29
    n += 30
    n += 31
    n += 32
    n += 33
    n += 34
    n += 35
    n += 36
    n += 37
    n += 38
    n += 39
    n += 40
    n += 41
    n += 42
    n += 43
    n += 44
    n += 45
    n += 46
    n += 47
    n += 48
    n += 49
    return n


def test_show_drops_docstrings_and_folds_argument_checks():
    text = dlbook.show(scaled_sum).data
    # the first paragraph of the docstring, as plain text, on the first line
    assert text.splitlines()[0] == f"# {__name__}.scaled_sum: Sum x times scale: see math.fsum and Kahan."
    assert '"""' not in text and "``" not in text and ":func:" not in text and "second paragraph" not in text
    assert "raise TypeError" not in text and "raise ValueError" not in text
    assert "# (2 argument checks: ValueError or TypeError on bad input)" in text
    assert "total = sum(x)  # the idea" in text and "raise OverflowError" in text
    compile(text, "shown", "exec")  # what the page shows is still valid Python


def test_show_keeps_a_class_readable():
    text = dlbook.show(Doubler).data
    assert "Not shown" not in text and "Doubles its input" in text.splitlines()[0]
    assert "class Doubler:\n    factor = 2\n" in text  # no blank line left where the docstring was
    compile(text, "shown", "exec")


def test_show_collapses_long_sources_in_html():
    short, long = dlbook.show(scaled_sum), dlbook.show(long_function)
    assert not short.collapsed and "<details" not in short._repr_html_()
    assert long.collapsed and long.n_lines > display.SHOW_COLLAPSE_LINES
    page = long._repr_html_()
    assert page.startswith(f'<details class="dlbook-source"><summary>{__name__}.long_function (')
    assert "n += 49" in repr(long)  # text/plain is the whole source


def test_plain_text_strips_rest_markup():
    assert display.plain_text("``x`` and :func:`~dlbook.train.fit` and :class:`T <a.T>`") == "x and dlbook.train.fit and T"


def test_glue_unwraps_numpy_and_torch_scalars(monkeypatch):
    import numpy as np
    import torch

    from dlbook import display

    shown = []
    monkeypatch.setattr(display, "_ipython_display", lambda bundle, metadata: shown.append(bundle))
    display.glue("a", np.float64(0.5))
    display.glue("b", torch.tensor(2.5))
    assert [b[display.GLUE_PREFIX + "text/plain"] for b in shown] == ["0.5", "2.5"]
