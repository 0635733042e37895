"""dlbook.hub: decides offline without a connection, uploads nothing unless allowed, one commit + tag when allowed."""

from __future__ import annotations

import socket
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import ModelCard

from dlbook import hub


@pytest.fixture
def online_env(monkeypatch, tmp_path):
    """An environment that *looks* online (no offline flag, no block), with no token saved, and no
    way to actually connect: any connection attempt fails the test."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("DLBOOK_BLOCK_NETWORK", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))

    def no_connect(self, address, *args, **kwargs):
        raise AssertionError(f"a connection was opened to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", no_connect)


def test_offline_flag_says_no(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, reason = hub.hub_available(token="hf_anything")
    assert not ok and "HF_HUB_OFFLINE is set" in reason and "unset HF_HUB_OFFLINE" in reason  # why, and what to do


def test_network_block_says_no(online_env, monkeypatch):
    monkeypatch.setenv("DLBOOK_BLOCK_NETWORK", "1")
    ok, reason = hub.hub_available(token="hf_anything")
    assert not ok and "blocked" in reason


def test_missing_token_says_no(online_env):
    assert huggingface_hub.get_token() is None
    ok, reason = hub.hub_available()
    assert not ok and "token" in reason


def test_token_and_no_flags_say_yes_without_connecting(online_env):
    ok, reason = hub.hub_available(token="hf_anything")
    assert ok, reason


class FakeModel:
    def save_pretrained(self, folder):
        (Path(folder) / "config.json").write_text("{}")
        (Path(folder) / "model.safetensors").write_bytes(b"weights")


class FakeTokenizer:
    def save_pretrained(self, folder):
        (Path(folder) / "tokenizer.json").write_text("{}")


def forbid_api(monkeypatch):
    class NoApi:
        def __init__(self, *args, **kwargs):
            raise AssertionError("HfApi must not be created when nothing is uploaded")

    monkeypatch.setattr(huggingface_hub, "HfApi", NoApi)


def test_push_offline_uploads_nothing_and_explains(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    forbid_api(monkeypatch)
    result = hub.push_model(FakeModel(), FakeTokenizer(), "someone/model", tag="v1.0")
    assert not result.pushed and "HF_HUB_OFFLINE" in result.reason
    assert len(result.plan) == 4 and "v1.0" in result.plan[-1]
    out = capsys.readouterr().out
    assert "not pushed to someone/model" in out and "4. tag the commit" in out


def test_dry_run_uploads_nothing_even_when_available(online_env, monkeypatch):
    forbid_api(monkeypatch)
    result = hub.push_model(FakeModel(), FakeTokenizer(), "someone/model", token="hf_x", dry_run=True, verbose=False)
    assert not result.pushed and "dry run" in result.reason and len(result.plan) == 3


def test_push_is_one_commit_then_a_tag(online_env, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir()), commit_message))
            return huggingface_hub.CommitInfo(
                commit_url="https://huggingface.co/someone/model/commit/abc123",
                commit_message=commit_message,
                commit_description="",
                oid="abc123",
            )

        def create_tag(self, repo_id, tag, revision, exist_ok):
            calls.append(("create_tag", repo_id, tag, revision))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    card = ModelCard("---\nlicense: other\n---\n# A card\n")
    result = hub.push_model(
        FakeModel(),
        FakeTokenizer(),
        "someone/model",
        card=card,
        tag="v1.0",
        token="hf_x",
        commit_message="first",
        verbose=False,
    )
    assert result.pushed and result.commit_sha == "abc123" and result.tag == "v1.0"
    assert [c[0] for c in calls] == ["init", "create_repo", "upload_folder", "create_tag"]
    assert calls[1] == ("create_repo", "someone/model", True, True)
    assert calls[2][2] == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]  # weights and card together
    assert calls[3] == ("create_tag", "someone/model", "v1.0", "abc123")  # the tag names that very commit


@pytest.mark.parametrize("bad", ["model-without-owner", "a/b/c", "/model", 3])
def test_bad_repo_id(bad):
    with pytest.raises(ValueError, match="repo_id"):
        hub.push_model(FakeModel(), FakeTokenizer(), bad, dry_run=True)


def test_bad_tag():
    with pytest.raises(ValueError, match="tag"):
        hub.push_model(FakeModel(), FakeTokenizer(), "someone/model", tag="  ", dry_run=True)
