"""A Hugging Face Space (Gradio SDK) that serves the book's fine-tuned sentiment classifier.

Chapter 11 of *Deep Learning, Verified* explains it. Where the model comes from (first match wins):

- ``DLBOOK_MODEL``: a local folder or a Hub repository id (``user/name``) for ``from_pretrained``,
  at the revision ``DLBOOK_MODEL_REVISION`` (a tag such as ``v1.0``, a branch or a commit; default
  ``main``). On a Space, set both as variables in the Space's settings.
- otherwise the book's cached classifier, ``dlbook.finetune.sentiment_classifier(DLBOOK_PROFILE)``
  (profile ``full`` unless set; trained on first use, which needs the book's offline assets).

The server listens on ``GRADIO_SERVER_NAME`` (default 127.0.0.1; a Space sets 0.0.0.0) and
``GRADIO_SERVER_PORT`` (default 7860).
"""

from __future__ import annotations

import os

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from dlbook import finetune, serving


def load_model():
    """``(model, tokenizer)`` from ``DLBOOK_MODEL`` if set, else the book's cached classifier."""
    source = os.environ.get("DLBOOK_MODEL")
    if source:
        revision = os.environ.get("DLBOOK_MODEL_REVISION") or None
        model = AutoModelForSequenceClassification.from_pretrained(source, revision=revision)
        return model.eval(), AutoTokenizer.from_pretrained(source, revision=revision)
    profile = os.environ.get("DLBOOK_PROFILE", "full")
    model, tokenizer, _ = finetune.sentiment_classifier(profile)
    tokenizer.model_max_length = finetune.SENTIMENT_SETTINGS[profile].max_length  # the length it was trained at
    return model, tokenizer


def main() -> None:
    model, tokenizer = load_model()
    demo = serving.build_demo(serving.SentimentService(model, tokenizer))
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    serving.launch_demo(demo, host=host, port=port, block=True)


if __name__ == "__main__":
    main()
