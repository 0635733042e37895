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
