"""Sharing a model on the Hugging Face Hub, and saying clearly when that is not possible.

Taught in chapter 11, "Sharing and serving: model cards and a demo". The book runs offline by
default, so nothing here opens a network connection unless the reader asked for it and the
environment allows it:

- :func:`hub_available`: ``(ok, reason)`` from the environment alone (``HF_HUB_OFFLINE``, the
  book's network block, a saved token); it never connects;
- :func:`push_model`: uploads a model, its tokenizer and its model card to one repository in a
  single commit and optionally tags that commit; when the Hub is not available it uploads
  nothing and returns (and prints) what it would have done and why it did not.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

_TRUE = {"1", "true", "yes", "on"}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def hub_available(token: str | None = None) -> tuple[bool, str]:
    """Whether this process may talk to the Hub: ``(ok, reason)``, decided without a connection.

    Not available when ``HF_HUB_OFFLINE`` is set (the book's tests and builds set it), when the
    book's test-time network block is on (``DLBOOK_BLOCK_NETWORK=1``), or when there is no
    token (``token`` argument, ``HF_TOKEN``, or the file ``hf auth login`` writes). A True
    answer means "worth trying", not "the Hub answered": the first real request finds out.
    """
    from huggingface_hub import constants, get_token

    if _env_true("HF_HUB_OFFLINE") or constants.HF_HUB_OFFLINE:
        return False, (
            "HF_HUB_OFFLINE is set, so the Hugging Face libraries open no connection to the Hub; "
            "to push, unset HF_HUB_OFFLINE on a machine with network access and a token."
        )
    if _env_true("DLBOOK_BLOCK_NETWORK"):
        return False, (
            "the network is blocked (DLBOOK_BLOCK_NETWORK=1, as in the book's tests); to push, unset DLBOOK_BLOCK_NETWORK."
        )
    if token is None and get_token() is None:
        return False, "no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access."
    return True, "a token is available and the Hub is not switched off."


@dataclass
class PushResult:
    """What :func:`push_model` did: ``pushed`` and, if so, the commit; if not, ``reason``.

    ``plan`` lists the steps, in order, that were (or would have been) carried out.
    """

    repo_id: str
    pushed: bool
    reason: str
    plan: list[str] = field(default_factory=list)
    commit_url: str | None = None
    commit_sha: str | None = None
    tag: str | None = None

    def __str__(self) -> str:
        head = f"pushed to {self.repo_id}: {self.commit_url}" if self.pushed else f"not pushed to {self.repo_id}: {self.reason}"
        return "\n".join([head, *(f"  {i + 1}. {step}" for i, step in enumerate(self.plan))])


def _check_repo_id(repo_id: Any) -> None:
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'user-or-org/model-name', got {repo_id!r}")


def push_model(
    model: Any,
    tokenizer: Any,
    repo_id: str,
    *,
    card: Any = None,
    commit_message: str = "Upload fine-tuned model",
    tag: str | None = None,
    private: bool = True,
    token: str | None = None,
    dry_run: bool = False,
    verbose: bool = True,
) -> PushResult:
    """Upload ``model``, ``tokenizer`` and ``card`` (a ``huggingface_hub.ModelCard``) to ``repo_id``.

    Everything goes in **one commit**: the files are written with ``save_pretrained`` into a
    temporary folder and sent with ``upload_folder``, so the repository never holds weights
    without their card. ``tag`` (e.g. ``"v1.0"``) then names that commit, so that
    ``from_pretrained(repo_id, revision=tag)`` or ``hf_hub_download(..., revision=tag)`` always
    gets exactly these files, whatever is pushed later. The repository is created
    (private by default) if it does not exist.

    With ``dry_run=True``, or when :func:`hub_available` says no, nothing is uploaded and no
    connection is opened: the result has ``pushed=False``, the reason, and the plan of what would
    have happened (printed when ``verbose``).
    """
    _check_repo_id(repo_id)
    if tag is not None and (not isinstance(tag, str) or not tag.strip()):
        raise ValueError(f"tag must be a non-empty string or None, got {tag!r}")
    plan = [
        f"create the {'private' if private else 'public'} model repository {repo_id} if it does not exist",
        "save_pretrained the model and the tokenizer, and write the card as README.md, into a temporary folder",
        f"upload that folder as one commit ({commit_message!r})",
    ]
    if tag:
        plan.append(f"tag the commit {tag!r} so that revision={tag!r} always means these files")
    ok, reason = (False, "dry run: nothing was uploaded (name your repository to push).") if dry_run else hub_available(token)
    if not ok:
        result = PushResult(repo_id, pushed=False, reason=reason, plan=plan, tag=tag)
        if verbose:
            print(result)
        return result

    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if card is not None:
            card.save(os.path.join(folder, "README.md"))
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    sha = getattr(info, "oid", None)
    if tag:
        api.create_tag(repo_id, tag=tag, revision=sha, exist_ok=False)
    result = PushResult(
        repo_id,
        pushed=True,
        reason="uploaded",
        plan=plan,
        commit_url=getattr(info, "commit_url", str(info)),
        commit_sha=sha,
        tag=tag,
    )
    if verbose:
        print(result)
    return result


__all__ = ["PushResult", "hub_available", "push_model"]
