"""The chapter 15 exercise checks pass the reference and fail plausible wrong answers."""

import torch

from dlbook import exercises
from dlbook.exercises.ch15 import kept_vocabulary, pareto_front


def test_all_registered():
    assert exercises.known("ch15") == ["ch15.kept_vocabulary", "ch15.pareto_front"]


def test_references_pass():
    for key in exercises.known("ch15"):
        assert exercises.check(key, exercises.reference(key), verbose=False)


def test_pareto_examples():
    assert pareto_front(torch.tensor([[90.0, 50.0, 17.0], [20.0, 20.0, 18.0], [70.0, 60.0, 18.0]])) == [0, 1]
    assert pareto_front(torch.tensor([[1.0, 2.0], [1.0, 2.0]])) == [0, 1]


def test_pareto_wrong_answers_fail():
    def strict_only(costs):  # forgets "no worse in every column": needs strictly better everywhere to dominate
        n = costs.shape[0]
        return [i for i in range(n) if not any(bool((costs[j] < costs[i]).all()) for j in range(n) if j != i)]

    def best_per_column(costs):  # the row that wins each column, not the front
        return sorted({int(i) for i in costs.argmin(0)})

    def identical_dominate(costs):  # treats an identical row as dominating
        n = costs.shape[0]
        return [i for i in range(n) if not any(bool((costs[j] <= costs[i]).all()) for j in range(n) if j != i)]

    for wrong in (strict_only, best_per_column, identical_dominate):
        assert not exercises.check("ch15.pareto_front", wrong, verbose=False)


def test_kept_vocabulary():
    assert kept_vocabulary([[5, 6, 5]], [0, 1]) == [0, 1, 5, 6]

    def forgets_specials(token_ids, special_ids):
        return sorted({i for ids in token_ids for i in ids})

    def not_sorted(token_ids, special_ids):
        return list(dict.fromkeys([*special_ids, *(i for ids in token_ids for i in ids)]))

    for wrong in (forgets_specials, not_sorted):
        assert not exercises.check("ch15.kept_vocabulary", wrong, verbose=False)
