"""dlbook.serving: input checks, predictions equal to the transformers pipeline, the app over HTTP."""

from __future__ import annotations

import math
import socket

import pytest
import torch

from dlbook import finetune, serving

MAX_LENGTH = finetune.SENTIMENT_SETTINGS["smoke"].max_length


@pytest.fixture(scope="module")
def classifier():
    model, tokenizer, _ = finetune.sentiment_classifier("smoke", device="cpu")
    return model, tokenizer


@pytest.fixture(scope="module")
def service(classifier):
    return serving.SentimentService(*classifier, max_length=MAX_LENGTH)


# ----------------------------------------------------------------------------- clean_text


@pytest.mark.parametrize("bad", [None, 42, 3.5, b"bytes", ["a list"], {"text": "x"}])
def test_non_text_is_a_type_error(bad):
    with pytest.raises(TypeError, match="must be text"):
        serving.clean_text(bad)


@pytest.mark.parametrize("empty", ["", " ", "\n\t  \r\n", "\u00a0"])
def test_empty_text_is_invalid_input(empty):
    with pytest.raises(serving.InvalidInput, match="empty"):
        serving.clean_text(empty)
    assert issubclass(serving.InvalidInput, ValueError)


def test_clean_text_strips_and_cuts():
    assert serving.clean_text("  fine film \n") == ("fine film", False)
    text, cut = serving.clean_text("x" * 50, max_chars=20)
    assert (text, cut) == ("x" * 20, True)
    assert serving.clean_text("x" * 20, max_chars=20) == ("x" * 20, False)
    with pytest.raises(ValueError, match="max_chars"):
        serving.clean_text("x", max_chars=0)


# ----------------------------------------------------------------------------- SentimentService


def test_predictions_equal_the_pipeline(classifier, service):
    from transformers import pipeline

    model, tokenizer = classifier
    texts = [*serving.EXAMPLES, "A long, winding, " * 200 + "and finally rewarding film."]
    tokenizer.model_max_length = MAX_LENGTH
    try:
        want = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")(texts, truncation=True)
    finally:
        tokenizer.model_max_length = 512
    for text, ref in zip(texts, want, strict=True):
        got = service.predict(text)
        assert got.label == ref["label"]
        assert math.isclose(got.confidence, ref["score"], rel_tol=1e-5)
        assert math.isclose(sum(got.probabilities.values()), 1.0, rel_tol=1e-6)
        assert got.confidence == max(got.probabilities.values())


def test_truncation_is_reported(classifier, service):
    _, tokenizer = classifier
    short = service.predict("A fine film.")
    assert not short.truncated and short.note == ""
    assert short.n_tokens == len(tokenizer("A fine film.")["input_ids"])
    long = service.predict("word " * 1_000)
    assert long.truncated and long.n_tokens == MAX_LENGTH and f"first {MAX_LENGTH} tokens" in long.note


def test_exactly_max_length_tokens_is_not_truncated(classifier, service):
    _, tokenizer = classifier
    text = " ".join(["good"] * (MAX_LENGTH - 2))  # + [CLS] and [SEP] = MAX_LENGTH tokens
    assert len(tokenizer(text)["input_ids"]) == MAX_LENGTH
    assert not service.predict(text).truncated
    assert service.predict(text + " good").truncated


def test_a_100kb_paste_is_handled(service):
    paste = "The plot meanders and the jokes land late. " * 2_400  # about 100 kB
    assert len(paste.encode()) > 100_000
    pred = service.predict(paste)
    assert pred.truncated and pred.label in service.labels
    probabilities, note = serving.respond(service, paste)
    assert probabilities == pred.probabilities and "longer than the model reads" in note


def test_service_rejects_bad_settings(classifier):
    model, tokenizer = classifier
    with pytest.raises(ValueError, match="max_length"):
        serving.SentimentService(model, tokenizer, max_length=100_000)
    with pytest.raises(ValueError, match="max_length"):
        serving.SentimentService(model, tokenizer, max_length=1)
    with pytest.raises(ValueError, match="id2label"):
        serving.SentimentService(torch.nn.Linear(2, 2), tokenizer)


def test_default_max_length_comes_from_the_tokenizer(classifier):
    model, tokenizer = classifier
    assert serving.SentimentService(model, tokenizer).max_length == min(512, tokenizer.model_max_length)


# ----------------------------------------------------------------------------- respond


@pytest.mark.parametrize("bad,words", [("", "empty"), ("   \n", "empty"), (42, "must be text"), (None, "must be text")])
def test_respond_never_raises_on_bad_input(service, bad, words):
    probabilities, note = serving.respond(service, bad)
    assert probabilities is None and words in note


def test_respond_names_label_and_confidence(service):
    pred = service.predict(serving.EXAMPLES[0])
    probabilities, note = serving.respond(service, serving.EXAMPLES[0])
    assert probabilities == pred.probabilities
    assert note == f"{pred.label} with confidence {pred.confidence:.3f}."


# ----------------------------------------------------------------------------- the app, over HTTP


def test_free_port_is_free():
    port = serving.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# gradio 6.31's queue summarises request latencies with pandas options that pandas 3 deprecates
# (Pandas4Warning, a DeprecationWarning, raised in gradio/queueing.py); nothing we call can avoid it.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")
def test_demo_over_http_equals_the_model(service, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

    demo = serving.build_demo(service)
    url = serving.launch_demo(demo)
    try:
        assert url.startswith("http://127.0.0.1:")
        client = Client(url, verbose=False)
        for text in serving.EXAMPLES[:2]:
            shown, note = client.predict(text, api_name="/classify")
            want = service.predict(text)
            assert shown["label"] == want.label
            assert {c["label"]: c["confidence"] for c in shown["confidences"]} == pytest.approx(want.probabilities, rel=1e-12)
        shown, note = client.predict("   ", api_name="/classify")
        assert not shown.get("label") and "empty" in note
        client.close()
    finally:
        demo.close()
