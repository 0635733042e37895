"""Collect every chapter's headline numbers and run time into one table (`make full`).

Reads the notebooks that nbval executed (``<dir>/*.ipynb``, with ``timings.json`` beside them),
takes each ``dlbook.headline`` output (its value and bar are in the output metadata), and writes
``results.json`` and ``results.md``. Exits 1 if a chapter failed, produced no headline, or a
headline misses its bar.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat


def headlines(nb) -> list[dict]:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("dlbook_headline")
            if meta:
                found.append(dict(meta))
    return found


def meets_bar(h: dict) -> bool:
    return (h["at_least"] is None or h["value"] >= h["at_least"]) and (h["at_most"] is None or h["value"] <= h["at_most"])


def bar_text(h: dict) -> str:
    parts = ([f">= {h['at_least']:g}"] if h["at_least"] is not None else []) + (
        [f"<= {h['at_most']:g}"] if h["at_most"] is not None else []
    )
    text = " and ".join(parts)
    if h.get("per_class"):
        return f"{text} on {h['hardware']}" if text else f"reported only: not checked on {h['hardware']}"
    return text or "finite"


def main(executed_dir: str, out_json: str) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from dlbook.env import provenance

    folder = Path(executed_dir)
    timings = json.loads((folder / "timings.json").read_text()) if (folder / "timings.json").exists() else {}
    chapters = sorted(p.stem for p in Path("notebooks").glob("[0-9][0-9]_*.py"))
    prov = provenance(profile="full")
    rows, problems = [], []
    for stem in chapters:
        timing = timings.get(stem, {"seconds": None, "status": "not run"})
        nb_path = folder / f"{stem}.ipynb"
        found = headlines(nbformat.read(nb_path, as_version=4)) if nb_path.exists() and timing["status"] == "passed" else []
        if timing["status"] != "passed":
            problems.append(f"{stem}: {timing['status']}")
        elif not found:
            problems.append(f"{stem}: no headline number (dlbook.headline) in the executed chapter")
        for h in found:
            if h["profile"] == "full" and not meets_bar(h):
                problems.append(f"{stem}: {h['name']} = {h['value']:.4g} misses its bar {bar_text(h)}")
        rows.append({"chapter": stem, **timing, "headlines": found})
    result = {"provenance": prov.__dict__, "chapters": rows, "problems": problems}
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).write_text(json.dumps(result, indent=2))
    lines = [
        "# Results of `make full`",
        "",
        f"Measured on: {prov.line()}",
        "",
        "| chapter | status | time (s) | headline | value | required |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        hs = row["headlines"] or [{"name": "-", "value": float("nan"), "at_least": None, "at_most": None}]
        for i, h in enumerate(hs):
            first = i == 0
            lines.append(
                f"| {row['chapter'] if first else ''} | {row['status'] if first else ''} | "
                f"{row['seconds'] if first and row['seconds'] is not None else ''} | {h['name']} | {h['value']:.4g} | "
                f"{bar_text(h) if h['name'] != '-' else ''} |"
            )
    if problems:
        lines += ["", "Problems:", ""] + [f"- {p}" for p in problems]
    Path(out_json).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
