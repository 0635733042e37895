import pytest

import dlbook
from dlbook.profiles import current_profile


def test_by_profile_picks_the_named_sizes():
    sizes = dlbook.by_profile("smoke", smoke=dict(n=8, epochs=1), full=dict(n=1000, epochs=3))
    assert sizes == {"n": 8, "epochs": 1}
    assert dlbook.by_profile("full", smoke=dict(n=8), full=dict(n=1000)) == {"n": 1000}


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid profiles are smoke, full"):
        dlbook.by_profile("fast", smoke=dict(n=1), full=dict(n=2))


def test_every_profile_must_be_given_with_the_same_keys():
    with pytest.raises(ValueError, match="missing"):
        dlbook.by_profile("smoke", smoke=dict(n=1))
    with pytest.raises(ValueError, match="keys"):
        dlbook.by_profile("smoke", smoke=dict(n=1), full=dict(m=2))


def test_environment_variable_chooses_the_profile(monkeypatch):
    monkeypatch.setenv("DLBOOK_PROFILE", "smoke")
    assert current_profile() == "smoke"
    monkeypatch.delenv("DLBOOK_PROFILE")
    assert current_profile() == "full"
    monkeypatch.setenv("DLBOOK_PROFILE", "huge")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        current_profile()
