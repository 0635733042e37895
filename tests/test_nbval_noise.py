"""The nbval plugin's noise check: library warnings on a cell's stderr fail the cell."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "plugins"))

from nbval_capture import ALLOW_TAG, noise_in  # noqa: E402


def _stderr(text: str) -> dict:
    return {"output_type": "stream", "name": "stderr", "text": text}


def test_warnings_and_load_reports_are_noise():
    outs = [
        _stderr("/tmp/ipykernel_1/2.py:3: UserWarning: Sparse CSR tensor support is in beta\n  x = 1\n"),
        _stderr("[transformers] BertForSequenceClassification LOAD REPORT from: /x\n"),
        {"output_type": "stream", "name": "stdout", "text": "DeprecationWarning: printed, not warned\n"},
    ]
    found = noise_in(outs, [])
    assert len(found) == 2
    assert found[0].startswith("/tmp/ipykernel_1/2.py:3: UserWarning: Sparse")
    assert "LOAD REPORT" in found[1]


def test_progress_bars_and_tagged_cells_are_not_noise():
    bars = [_stderr("accuracy:  47%|#####6      | 7/15 [00:26<00:27,  3.40s/it]")]
    assert noise_in(bars, []) == []
    assert noise_in([_stderr("x.py:1: FutureWarning: old\n")], [ALLOW_TAG]) == []


def test_warnings_after_a_bar_and_transformers_logger_lines_are_noise():
    # nbval keeps what follows the last carriage return: a bar without a description starts
    # with spaces, and a warning issued mid-bar continues its line
    mid_bar = _stderr(" 50%|#####     | 5/10 [00:01<00:01]/x/y.py:7: FutureWarning: old api\n  f()\n")
    logger = _stderr("[transformers] `use_cache=True` is incompatible with gradient checkpointing.\n")
    raw = _stderr("\r  0%|          | 0/10\r/x/y.py:7: UserWarning: raw\n")
    found = noise_in([mid_bar, logger, raw], [])
    assert found == [
        "50%|#####     | 5/10 [00:01<00:01]/x/y.py:7: FutureWarning: old api",
        "[transformers] `use_cache=True` is incompatible with gradient checkpointing.",
        "/x/y.py:7: UserWarning: raw",
    ]


def test_ordinary_stderr_text_is_not_noise():
    text = _stderr("warning: lowercase text is the chapter's own\nNo warnings here; 3 files written\n")
    assert noise_in([text], []) == []
