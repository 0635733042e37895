import pytest
import torch

from dlbook import exercises
from dlbook.exercises import compare


def test_mean_pool_check_passes_the_reference_and_fails_wrong_answers(capsys):
    assert exercises.check("ch01.mean_pool", exercises.reference("ch01.mean_pool"))

    def mean_over_padding_too(hidden, mask):  # the classic mistake: padding counted in the mean
        return hidden.mean(dim=1)

    result = exercises.check("ch01.mean_pool", mean_over_padding_too)
    assert not result and "wrong values" in result.failure

    def stub(hidden, mask):
        raise NotImplementedError

    assert "fill in the stub" in exercises.check("ch01.mean_pool", stub).failure
    assert "not yet" in capsys.readouterr().out


def test_check_reports_shape_and_dtype_errors():
    assert "shape" in exercises.check("ch01.mean_pool", lambda h, m: h, verbose=False).failure
    assert (
        "dtype"
        in exercises.check(
            "ch01.mean_pool", lambda h, m: exercises.reference("ch01.mean_pool")(h, m).double(), verbose=False
        ).failure
    )


def test_unknown_exercises_are_named():
    with pytest.raises(KeyError, match="no exercises for chapter"):
        exercises.check("ch99.nothing", lambda: None)
    with pytest.raises(KeyError, match="ch01 has: ch01.mean_pool"):
        exercises.check("ch01.nothing", lambda: None)
    with pytest.raises(TypeError):
        exercises.check("ch01.mean_pool", 42)


def test_compare_describes_differences():
    assert compare(torch.ones(2), torch.ones(2), 1e-6, 1e-6) is None
    assert "index" in compare(torch.tensor([1.0, 5.0]), torch.ones(2), 1e-6, 1e-6)
    assert "expected 3" in compare(2, 3, 0, 0)
    assert compare(0.1 + 0.2, 0.3, 1e-9, 1e-9) is None
    assert "sequence" in compare(1.0, (1.0, 2.0), 0, 0)


def test_every_registered_exercise_passes_its_reference():
    keys = exercises.known()
    assert "ch01.mean_pool" in keys
    for key in keys:
        assert exercises.check(key, exercises.reference(key), verbose=False), key


def test_compare_reports_an_unexpected_nan():
    msg = compare(torch.tensor([1.0, float("nan")]), torch.ones(2), 1e-6, 1e-6)
    assert msg and "index (1,)" in msg
    assert compare(torch.tensor([float("nan")]), torch.tensor([float("nan")]), 1e-6, 1e-6) is None
