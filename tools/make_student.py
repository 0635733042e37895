"""Write a student copy of the chapter notebooks: the same notebooks with every solution removed.

    python tools/make_student.py notebooks _build/student      (what `make student` runs)

For every ``NN_slug.ipynb`` in the source folder this writes ``NN_slug.ipynb`` to the output folder
with outputs stripped and these solution forms removed (the three forms the chapters use):

1. cells tagged ``solution`` (the reference solution of a code exercise);
2. gated solutions: a markdown cell that opens ``{solution-start}`` (in a ``` or ::: fence), every
   cell after it, and the markdown cell with the matching ``{solution-end}``; text in those two
   markdown cells before the start fence or after the end fence (an exercise, say) is kept;
3. ``{solution}`` directive blocks inside a markdown cell (``:::{solution} label`` ... ``:::``);
   the rest of the cell, the ``{exercise}`` block included, is kept.

Exercises, stubs and the ``dlbook.exercises.check`` lines stay, so a student's notebook runs and
tells them when their answer is right. A ``README.txt`` in the output folder lists what was removed
from each notebook. A notebook with an unclosed solution block is an error (exit status 1), as is a
student copy in which a solution marker survived.

The teacher's notebooks are never modified.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
SOLUTION_TAG = "solution"

# A fence line: optional indentation, three or more backticks or colons, then the rest of the line.
_FENCE = re.compile(r"^(?P<indent>[ \t]{0,3})(?P<fence>`{3,}|:{3,})(?P<rest>.*)$")
_DIRECTIVE = re.compile(r"^\{(?P<name>[A-Za-z0-9_-]+)\}\s*(?P<arg>.*)$")


class StudentCopyError(ValueError):
    """A notebook whose solutions cannot be removed safely (an unclosed or unmatched block)."""


@dataclass
class Removed:
    """What was taken out of one notebook, for README.txt."""

    solution_cells: list[str] = field(default_factory=list)  # first line of each tagged cell outside a gate
    gated: list[str] = field(default_factory=list)  # labels of {solution-start} ... {solution-end} blocks
    gated_cells: list[int] = field(default_factory=list)  # per gate: cells dropped whole (emptied start/end included)
    directive_blocks: list[str] = field(default_factory=list)  # labels of {solution} blocks

    def total(self) -> int:
        return len(self.solution_cells) + len(self.gated) + len(self.directive_blocks)

    def lines(self) -> list[str]:
        out = []
        if self.solution_cells:
            out.append(f"  {len(self.solution_cells)} cell(s) tagged 'solution':")
            out += [f"    - {first}" for first in self.solution_cells]
        if self.gated:
            out.append(f"  {len(self.gated)} gated solution(s) {{solution-start}} ... {{solution-end}}:")
            out += [f"    - {label} ({n} cell(s) dropped)" for label, n in zip(self.gated, self.gated_cells, strict=True)]
        if self.directive_blocks:
            out.append(f"  {len(self.directive_blocks)} {{solution}} block(s) in markdown cells:")
            out += [f"    - {label}" for label in self.directive_blocks]
        return out or ["  nothing to remove"]


def _fence_open(line: str) -> tuple[str, str, str] | None:
    """``(fence, directive name, argument)`` if ``line`` opens a directive fence like ``:::{name} arg``."""
    m = _FENCE.match(line)
    if not m:
        return None
    d = _DIRECTIVE.match(m.group("rest").strip())
    if not d:
        return None
    return m.group("fence"), d.group("name"), d.group("arg").strip()


def _closes(line: str, fence: str) -> bool:
    """True if ``line`` is a bare closing fence for an opening ``fence`` (same character, at least as long)."""
    m = _FENCE.match(line)
    if not m or m.group("rest").strip():
        return False
    got = m.group("fence")
    return got[0] == fence[0] and len(got) >= len(fence)


def _skip_block(lines: list[str], start: int, fence: str, what: str, where: str) -> int:
    """Index of the line that closes the block opened at ``lines[start]``.

    As in MyST, a fenced block ends at the first bare fence of the same character that is at least as
    long as the opening one; inner directives use shorter fences (``::::{solution}`` around ``:::{note}``).
    """
    for j in range(start + 1, len(lines)):
        if _closes(lines[j], fence):
            return j
    raise StudentCopyError(f"{where}: the {what} block opened by {lines[start].strip()!r} is never closed")


def remove_solution_directives(source: str, where: str = "a markdown cell") -> tuple[str, list[str]]:
    """Remove every ``{solution}`` directive block from markdown ``source``; return the text and the labels removed."""
    lines = source.split("\n")
    out: list[str] = []
    labels: list[str] = []
    i = 0
    while i < len(lines):
        opened = _fence_open(lines[i])
        if opened and opened[1] == "solution":
            end = _skip_block(lines, i, opened[0], "{solution}", where)
            labels.append(opened[2] or "(no label)")
            i = end + 1
            # one blank line between the blocks around it is enough
            while out and not out[-1].strip() and i < len(lines) and not lines[i].strip():
                i += 1
            continue
        out.append(lines[i])
        i += 1
    text = "\n".join(out).rstrip()
    return text, labels


def _find_gate(lines: list[str], name: str) -> tuple[int, int, str] | None:
    """``(first line, last line, label)`` of the first ``{name}`` fence in ``lines``, or None."""
    for i, line in enumerate(lines):
        opened = _fence_open(line)
        if opened and opened[1] == name:
            end = _skip_block(lines, i, opened[0], "{" + name + "}", "gated solution")
            return i, end, opened[2]
    return None


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _first_line(cell) -> str:
    for line in cell.source.split("\n"):
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()[:100]
    return cell.source.strip().split("\n")[0][:100]


def strip_solutions(nb: nbformat.NotebookNode, name: str = "notebook") -> tuple[nbformat.NotebookNode, Removed]:
    """A student copy of ``nb`` (the input is not modified) and a record of what was removed."""
    removed = Removed()
    cells_out = []
    in_gate = False  # inside a {solution-start} ... {solution-end} that spans cells

    def drop_in_gate() -> None:
        removed.gated_cells[-1] += 1

    for index, original in enumerate(nb.cells):
        cell = copy.deepcopy(original)
        where = f"{name}, cell {index}"
        if cell.cell_type != "markdown":
            if in_gate:
                drop_in_gate()
            elif SOLUTION_TAG in _tags(cell):
                removed.solution_cells.append(_first_line(cell))
            else:
                if cell.cell_type == "code":
                    cell.outputs = []
                    cell.execution_count = None
                    cell.metadata.pop("execution", None)
                cells_out.append(cell)
            continue

        lines = cell.source.split("\n")
        kept: list[str] = []
        touched_by_gate = False
        while True:
            start = _find_gate(lines, "solution-start")
            end = _find_gate(lines, "solution-end")
            if in_gate:
                if start is not None and (end is None or start[0] < end[0]):
                    raise StudentCopyError(f"{where}: {{solution-start}} inside the open gated solution {removed.gated[-1]!r}")
                touched_by_gate = True
                if end is None:  # the whole cell lies inside the gate
                    lines = []
                    break
                lines = lines[end[1] + 1 :]  # keep what follows the end fence
                in_gate = False
                continue
            if end is not None and (start is None or end[0] < start[0]):
                raise StudentCopyError(f"{where}: {{solution-end}} without a {{solution-start}} before it")
            if start is None:
                break
            removed.gated.append(start[2] or "(no label)")
            removed.gated_cells.append(0)
            kept += lines[: start[0]]
            lines = lines[start[1] + 1 :]
            in_gate = True

        text = "\n".join(kept + lines)
        text, labels = remove_solution_directives(text, where)
        removed.directive_blocks += labels
        if SOLUTION_TAG in _tags(cell):  # a markdown cell tagged solution
            removed.solution_cells.append(_first_line(cell))
            continue
        if not text.strip():
            if touched_by_gate:
                drop_in_gate()
            continue
        cell.source = text.strip("\n")
        cells_out.append(cell)
    if in_gate:
        raise StudentCopyError(f"{name}: the gated solution {removed.gated[-1]!r} has no {{solution-end}}")
    student = copy.deepcopy(nb)
    student.cells = cells_out
    return student, removed


_LEFTOVER = re.compile(r"\{solution(-start|-end)?\}")


def leftover_solutions(nb: nbformat.NotebookNode) -> list[str]:
    """Descriptions of any solution marker still in ``nb`` (empty for a proper student copy)."""
    found = []
    for i, cell in enumerate(nb.cells):
        if SOLUTION_TAG in _tags(cell):
            found.append(f"cell {i} is tagged 'solution'")
        m = _LEFTOVER.search(cell.source)
        if m:
            found.append(f"cell {i} still holds {m.group(0)}")
    return found


def make_student(src: Path, dest: Path) -> dict[str, Removed]:
    """Write the student copy of every ``NN_slug.ipynb`` in ``src`` to ``dest``; return what was removed."""
    src, dest = Path(src), Path(dest)
    notebooks = sorted(src.glob(NOTEBOOK_GLOB))
    if not notebooks:
        raise StudentCopyError(f"no notebooks matching {NOTEBOOK_GLOB} in {src}")
    copies = {}
    report: dict[str, Removed] = {}
    for path in notebooks:  # convert all first: a bad notebook writes nothing
        nb = nbformat.read(path, as_version=4)
        student, removed = strip_solutions(nb, path.name)
        left = leftover_solutions(student)
        if left:
            raise StudentCopyError(f"{path.name}: solution markers survived: {'; '.join(left)}")
        nbformat.validate(student)
        copies[path.name] = student
        report[path.name] = removed
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(NOTEBOOK_GLOB):
        if stale.name not in copies:
            stale.unlink()
    for filename, student in copies.items():
        nbformat.write(student, dest / filename)
    lines = [
        "Student copy of the notebooks of Deep Learning, Verified.",
        f"Made by tools/make_student.py from {src}/: outputs stripped, solutions removed.",
        "Exercises, stubs and their dlbook.exercises.check(...) lines are kept: run a check to see if your answer is right.",
        "",
    ]
    for filename, removed in report.items():
        lines.append(f"{filename}: {removed.total()} solution(s) removed")
        lines += removed.lines()
    (dest / "README.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder with the teacher's NN_slug.ipynb notebooks")
    parser.add_argument("dest", type=Path, help="folder for the student copy (created if missing)")
    args = parser.parse_args(argv)
    try:
        report = make_student(args.src, args.dest)
    except StudentCopyError as err:
        print(f"make_student: {err}", file=sys.stderr)
        return 1
    total = sum(r.total() for r in report.values())
    print(f"wrote {len(report)} student notebook(s) to {args.dest} ({total} solution(s) removed)")
    print(f"what was removed: {args.dest / 'README.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
