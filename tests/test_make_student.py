"""`make student` (tools/make_student.py): solutions out, exercises and stubs in, teacher's copy untouched."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_student", ROOT / "tools" / "make_student.py")
make_student = importlib.util.module_from_spec(_spec)
sys.modules["make_student"] = make_student
_spec.loader.exec_module(make_student)

SECRET = "SECRET"  # written into every solution part of the toy notebook; none may survive


def toy_notebook() -> nbformat.NotebookNode:
    """One notebook holding every solution form the chapters use, plus things that must stay."""
    computed = new_code_cell("x = 1 + 1\nx", execution_count=3)
    computed.outputs = [new_output("execute_result", data={"text/plain": "2"}, execution_count=3)]
    gated_code = new_code_cell(f"def my_fn(a):\n    return a + 1  # {SECRET} code\n\n\nassert check(my_fn)")
    gated_code.metadata["tags"] = ["solution"]
    loose_solution = new_code_cell(f"answer = 42  # {SECRET} tagged cell outside a gate")
    loose_solution.metadata["tags"] = ["solution"]
    tagged_md = new_markdown_cell(f"The answer is 42 ({SECRET} markdown tagged solution).")
    tagged_md.metadata["tags"] = ["solution"]
    return new_notebook(
        cells=[
            new_markdown_cell("# 5. A toy chapter\n\nLearning objectives."),
            computed,
            new_markdown_cell(
                "## Exercises\n\n"
                ":::{exercise}\n:label: toy-ex-short\nWhy is the sky blue?\n:::\n\n"
                f":::{{solution}} toy-ex-short\n:class: dropdown\nRayleigh scattering ({SECRET} directive).\n:::\n\n"
                "Text after the solution block stays."
            ),
            new_markdown_cell(":::{exercise}\n:label: toy-ex-code\nWrite `my_fn(a)` returning a + 1.\n:::"),
            new_code_cell("def my_fn(a):\n    raise NotImplementedError  # your code here\n\n\ncheck(my_fn)"),
            new_markdown_cell("A hint before the gate stays.\n\n```{solution-start} toy-ex-code\n:class: dropdown\n```"),
            new_markdown_cell(f"Explanation of the answer ({SECRET} inside the gate)."),
            gated_code,
            new_markdown_cell(
                "```{solution-end}\n```\n\n"
                ":::{exercise}\n:label: toy-ex-next\nThe exercise that shares the end cell stays.\n:::"
            ),
            new_markdown_cell(
                ":::{exercise}\n:label: toy-ex-nested\nA question.\n:::\n\n"
                f"::::{{solution}} toy-ex-nested\n:::{{note}}\nA nested note ({SECRET}).\n:::\n"
                f"```python\nprint('{SECRET} code in a solution')\n```\n::::\n"
            ),
            new_markdown_cell(
                ":::{exercise}\n:label: toy-ex-backtick\nAnother question.\n:::\n\n"
                f"```{{solution}} toy-ex-backtick\n:class: dropdown\n{SECRET} in backtick form\n```"
            ),
            new_markdown_cell(
                ":::{exercise}\n:label: toy-ex-onecell\nA gate opened and closed in one cell.\n:::\n\n"
                f"```{{solution-start}} toy-ex-onecell\n```\n{SECRET} one-cell gate\n```{{solution-end}}\n```"
            ),
            loose_solution,
            tagged_md,
            new_markdown_cell("## Further reading\n\nA book."),
        ]
    )


def all_text(nb) -> str:
    return "\n".join(c.source for c in nb.cells)


def test_toy_notebook_loses_every_solution_and_keeps_the_rest():
    nb = toy_notebook()
    before = nbformat.writes(nb)
    student, removed = make_student.strip_solutions(nb, "toy.ipynb")
    text = all_text(student)
    assert SECRET not in text, [c.source for c in student.cells if SECRET in c.source]
    assert nbformat.writes(nb) == before, "the teacher's notebook was modified"
    # kept: every exercise, the stub and its check, text around the removed blocks
    labels = re.findall(r":label: (\S+)", text)
    assert labels == ["toy-ex-short", "toy-ex-code", "toy-ex-next", "toy-ex-nested", "toy-ex-backtick", "toy-ex-onecell"]
    assert "raise NotImplementedError" in text and "check(my_fn)" in text
    for kept in ("Text after the solution block stays.", "A hint before the gate stays.", "## Further reading"):
        assert kept in text
    assert make_student.leftover_solutions(student) == []
    # what was removed, by kind
    assert removed.gated == ["toy-ex-code", "toy-ex-onecell"]
    assert removed.gated_cells == [2, 0]  # the explanation and the code; start/end cells keep other text
    assert removed.directive_blocks == ["toy-ex-short", "toy-ex-nested", "toy-ex-backtick"]
    assert len(removed.solution_cells) == 2  # tagged code and tagged markdown outside a gate
    assert removed.total() == 7
    nbformat.validate(student)


def test_outputs_are_stripped():
    student, _ = make_student.strip_solutions(toy_notebook())
    code = [c for c in student.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_cli_writes_copies_and_readme(tmp_path: Path):
    src, dest = tmp_path / "notebooks", tmp_path / "student"
    src.mkdir()
    nbformat.write(toy_notebook(), src / "05_toy.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell("# 6. No exercises")]), src / "06_plain.ipynb")
    (src / "scratch.ipynb").write_text("not a chapter")  # not NN_slug: ignored
    dest.mkdir()
    nbformat.write(new_notebook(), dest / "99_stale.ipynb")
    assert make_student.main([str(src), str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["05_toy.ipynb", "06_plain.ipynb", "README.txt"]
    assert SECRET not in (dest / "05_toy.ipynb").read_text()
    assert SECRET in (src / "05_toy.ipynb").read_text()
    readme = (dest / "README.txt").read_text()
    assert "05_toy.ipynb: 7 solution(s) removed" in readme
    for label in ("toy-ex-code", "toy-ex-short", "toy-ex-nested", "toy-ex-backtick", "toy-ex-onecell"):
        assert label in readme
    assert "06_plain.ipynb: 0 solution(s) removed" in readme and "nothing to remove" in readme


@pytest.mark.parametrize(
    "cells, message",
    [
        ([new_markdown_cell("```{solution-start} a\n```"), new_code_cell("x = 1")], "has no {solution-end}"),
        ([new_markdown_cell("```{solution-end}\n```")], "without a {solution-start}"),
        ([new_markdown_cell(":::{solution} a\nnever closed")], "never closed"),
        (
            [new_markdown_cell("```{solution-start} a\n```"), new_markdown_cell("```{solution-start} b\n```")],
            "inside the open gated solution",
        ),
    ],
    ids=["unclosed gate", "end without start", "unclosed directive", "gate inside gate"],
)
def test_malformed_solutions_are_errors(cells, message):
    with pytest.raises(make_student.StudentCopyError, match=re.escape(message)):
        make_student.strip_solutions(new_notebook(cells=cells))


def test_cli_fails_and_writes_nothing_on_a_bad_notebook(tmp_path: Path, capsys):
    src, dest = tmp_path / "notebooks", tmp_path / "student"
    src.mkdir()
    nbformat.write(toy_notebook(), src / "05_toy.ipynb")
    nbformat.write(new_notebook(cells=[new_markdown_cell(":::{solution} x\nunclosed")]), src / "07_bad.ipynb")
    assert make_student.main([str(src), str(dest)]) == 1
    assert "07_bad.ipynb" in capsys.readouterr().err
    assert not dest.exists()


def test_cli_fails_without_notebooks(tmp_path: Path):
    assert make_student.main([str(tmp_path), str(tmp_path / "out")]) == 1


# ---- the real chapters ----------------------------------------------------------------------------
CHAPTER_NOTEBOOKS = sorted((ROOT / "notebooks").glob(make_student.NOTEBOOK_GLOB))


def _solution_names(nb) -> set[str]:
    """Names that only the solution cells define (a leak if they appear in the student copy)."""
    tagged = [c.source for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    rest = "\n".join(c.source for c in nb.cells if "solution" not in c.metadata.get("tags", []))
    names = set()
    for src in tagged:
        names |= set(re.findall(r"^def (\w+)", src, re.M))
    return {n for n in names if not re.search(rf"\b{n}\b", rest)}


def test_real_notebooks_convert_with_no_solution_left(tmp_path: Path):
    assert CHAPTER_NOTEBOOKS, "no chapter notebooks found"
    report = make_student.make_student(ROOT / "notebooks", tmp_path)
    assert set(report) == {p.name for p in CHAPTER_NOTEBOOKS}
    for path in CHAPTER_NOTEBOOKS:
        teacher = nbformat.read(path, as_version=4)
        student = nbformat.read(tmp_path / path.name, as_version=4)
        assert make_student.leftover_solutions(student) == [], path.name
        text = all_text(student)
        assert "{solution" not in text, path.name
        solution_sources = {c.source for c in teacher.cells if "solution" in c.metadata.get("tags", [])}
        for cell in student.cells:
            assert cell.source not in solution_sources, f"{path.name}: a solution cell survived:\n{cell.source}"
            if cell.cell_type == "code":
                # solutions assert their check passes; stubs only call it (a stub's check must not raise)
                assert not re.search(r"^\s*assert\s+dlbook\.exercises\.check\(", cell.source, re.M), cell.source
                assert cell.outputs == [] and cell.execution_count is None
        for name in _solution_names(teacher):
            assert not re.search(rf"\b{name}\b", text), f"{path.name}: {name} (defined in a solution) survived"
        # exercises and stubs survive: the same exercise labels, the same number of stub checks
        teacher_text = all_text(teacher)
        assert re.findall(r"^:label: (\S+)", text, re.M) == re.findall(r"^:label: (\S+)", teacher_text, re.M)
        stubs = [c.source for c in teacher.cells if "NotImplementedError" in c.source]
        assert stubs == [c.source for c in student.cells if "NotImplementedError" in c.source]
        # everything the teacher's copy marks as a solution was counted as removed
        assert len(report[path.name].gated) == teacher_text.count("{solution-start}")
        assert len(report[path.name].directive_blocks) == len(re.findall(r"^[:`]{3,}\{solution\}", teacher_text, re.M))
