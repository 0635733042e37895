"""Serving a text classifier behind a small web demo: input checks, prediction, the Gradio app.

Taught in chapter 11, "Sharing and serving: model cards and a demo". The pieces:

- :func:`clean_text`: the input checks every request goes through (type, emptiness, size);
- :class:`SentimentService`: tokenizer + model + softmax for one text at a time, with the
  truncation the model needs and a note that says when it happened;
- :func:`respond`: what the web page shows for one request (a label dict and a note), never an
  exception, whatever was typed or pasted;
- :func:`build_demo`: the Gradio ``Blocks`` app (text in, label and confidence out, example
  reviews), built with a theme that loads no web fonts, so it works with no internet;
- :func:`free_port`: a free TCP port on 127.0.0.1 to launch it on.

``spaces/sentiment/app.py`` (the Hugging Face Space) and the chapter both build the app here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .distributed import free_port  # one definition, shared with chapter 16's launcher
from .env import resolve_device

#: A paste longer than this many characters is cut before tokenising (about 20 pages of text).
MAX_CHARS = 20_000

#: Reviews the demo offers as one-click examples.
EXAMPLES = (
    "An absolute joy from the first frame to the last.",
    "Two hours of my life I will never get back.",
    "The cast is wonderful, but the script gives them nothing to do.",
    "Not as bad as the trailer suggested.",
)


class InvalidInput(ValueError):
    """The request cannot be classified (empty text); the message says why, in plain words."""


def clean_text(text: Any, max_chars: int = MAX_CHARS) -> tuple[str, bool]:
    """Check one request's text; return ``(text, cut)`` with ``cut`` True when it was shortened.

    Raises :class:`TypeError` for anything but a ``str`` and :class:`InvalidInput` for a text
    that is empty or only whitespace. A text longer than ``max_chars`` characters is cut to
    its first ``max_chars`` (the model reads far fewer tokens than that anyway), which bounds the
    tokenizer's work on a huge paste.
    """
    if not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"max_chars must be a positive int, got {max_chars!r}")
    if not isinstance(text, str):
        raise TypeError(f"the review must be text (str), got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise InvalidInput("The review is empty: type or paste some text first.")
    if len(stripped) > max_chars:
        return stripped[:max_chars], True
    return stripped, False


@dataclass(frozen=True)
class Prediction:
    """One classified text: the label, its probability, all class probabilities, and what was read.

    ``n_tokens`` is the number of tokens the model read (special tokens included);
    ``truncated`` says whether the text was longer than that; ``note`` says so in words
    (empty when nothing needs saying).
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    n_tokens: int
    truncated: bool
    note: str


class SentimentService:
    """A sequence classifier and its tokenizer, ready to answer one request at a time.

    ``max_length`` is the most tokens the model reads (default: the tokenizer's
    ``model_max_length``, capped by the model's position embeddings); longer texts are
    truncated, and the :class:`Prediction` says so. Everything runs under
    ``torch.inference_mode`` in eval mode on the model's device.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, max_length: int | None = None, max_chars: int = MAX_CHARS) -> None:
        config = getattr(model, "config", None)
        if config is None or not getattr(config, "id2label", None):
            raise ValueError("model needs a config with id2label (a ...ForSequenceClassification)")
        limit = getattr(config, "max_position_embeddings", None) or 512
        tok_max = getattr(tokenizer, "model_max_length", limit)
        default = min(limit, tok_max if isinstance(tok_max, int) and tok_max > 0 else limit)
        if max_length is None:
            max_length = default
        if not isinstance(max_length, int) or not 2 <= max_length <= limit:
            raise ValueError(f"max_length must be an int in [2, {limit}], got {max_length!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_chars = max_chars
        self.labels = [config.id2label[i] for i in range(len(config.id2label))]

    @torch.inference_mode()
    def predict(self, text: Any) -> Prediction:
        """Classify one text. Raises ``TypeError`` / :class:`InvalidInput` as :func:`clean_text` does."""
        text, cut = clean_text(text, self.max_chars)
        device = resolve_device(model=self.model)
        # Windows of max_length tokens over the whole text: the first is what the model reads, and
        # a second one exists exactly when the text went on past it.
        enc = self.tokenizer(text, truncation=True, max_length=self.max_length, return_overflowing_tokens=True)
        truncated = cut or len(enc["input_ids"]) > 1
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        batch = {k: torch.tensor([enc[k][0]], device=device) for k in keys}  # (1, n_tokens) each
        probs = self.model(**batch).logits.float().softmax(-1)[0].cpu()  # (C,)
        best = int(probs.argmax())
        n_tokens = len(enc["input_ids"][0])
        note = (
            f"The text is longer than the model reads: only its first {n_tokens} tokens were classified." if truncated else ""
        )
        return Prediction(
            label=self.labels[best],
            confidence=float(probs[best]),
            probabilities={name: float(p) for name, p in zip(self.labels, probs.tolist(), strict=True)},
            n_tokens=n_tokens,
            truncated=truncated,
            note=note,
        )


def respond(service: SentimentService, text: Any) -> tuple[dict[str, float] | None, str]:
    """What the demo shows for one request: ``(probabilities by label or None, a note)``.

    Never raises on bad input: an empty text or a non-string gets ``None`` and a message that
    says what is wrong; a prediction gets its class probabilities (what ``gr.Label`` displays)
    and a note that names the label and confidence, and the truncation if there was one.
    """
    try:
        pred = service.predict(text)
    except (InvalidInput, TypeError) as err:
        return None, str(err)
    words = f"{pred.label} with confidence {pred.confidence:.3f}"
    return pred.probabilities, f"{words}. {pred.note}".strip()


def offline_theme():
    """Gradio's default theme with system fonts only, so the page requests no web fonts."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_demo(service: SentimentService, *, title: str = "Movie-review sentiment", examples: Sequence[str] = EXAMPLES):
    """The Gradio app: a text box in, the label with its confidence and a note out, examples below.

    The button's handler is :func:`respond`, exposed as the API endpoint ``/classify``. Launch
    it with :func:`launch_demo`, which adds the offline theme (Gradio 6: the theme is a
    ``launch`` argument). Gradio is imported here, not when this module is imported.
    """
    import gradio as gr

    def classify(text: str) -> tuple[dict[str, float] | None, str]:
        return respond(service, text)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nType or paste a movie review; the fine-tuned classifier says whether it is positive.")
        text = gr.Textbox(label="Review", lines=4, placeholder="A film review, in English", elem_id="review")
        button = gr.Button("Classify", variant="primary", elem_id="classify")
        label = gr.Label(label="Sentiment", num_top_classes=len(service.labels), elem_id="sentiment")
        note = gr.Textbox(label="Note", interactive=False, elem_id="note")
        gr.Examples(examples=[[e] for e in examples], inputs=text)
        button.click(classify, inputs=text, outputs=[label, note], api_name="classify")
    return demo


def launch_demo(demo: Any, host: str = "127.0.0.1", port: int | None = None, *, block: bool = False) -> str:
    """Start ``demo`` on ``host:port`` (a free port when None) and return its URL.

    With ``block=False`` the server runs in a background thread and this returns at once
    (stop it with ``demo.close()``); with ``block=True`` it serves until interrupted (a Space).
    The page uses :func:`offline_theme`; server-side rendering, the MCP server, sharing links and
    the inline notebook view (an iframe pointing at this port) are off.
    """
    port = free_port(host) if port is None else port
    demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        share=False,
        inline=False,
        quiet=True,
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        theme=offline_theme(),
    )
    return f"http://{host}:{port}/"


__all__ = [
    "EXAMPLES",
    "MAX_CHARS",
    "InvalidInput",
    "Prediction",
    "SentimentService",
    "build_demo",
    "clean_text",
    "launch_demo",
    "offline_theme",
    "free_port",
    "respond",
]
