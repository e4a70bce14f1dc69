"""Generator and brute-force solver: solvable, several answers, reproducible, disjoint splits."""

import itertools
import random

import pytest

from papo_verl.demo.reward import check_solution
from papo_verl.demo.task import (TaskConfig, TaskConfigError, format_trace, generate_problems, group_solutions,
                                 sample_trace, solve)


def reachable_by_expressions(numbers, ops="+-*"):
    """Independent oracle: every value of an expression over a sub-multiset of ``numbers`` whose
    intermediate values are non-negative (a binary tree over a chosen subset, any order)."""
    values = set()
    idx = range(len(numbers))

    def exprs(subset):
        if len(subset) == 1:
            return {numbers[subset[0]]}
        out = set()
        for r in range(1, len(subset)):
            for left in itertools.combinations(subset, r):
                right = tuple(i for i in subset if i not in left)
                for a in exprs(left):
                    for b in exprs(right):
                        if "+" in ops:
                            out.add(a + b)
                        if "*" in ops:
                            out.add(a * b)
                        if "-" in ops and a >= b:
                            out.add(a - b)
        return out

    for r in range(2, len(numbers) + 1):
        for subset in itertools.combinations(idx, r):
            values |= exprs(subset)
    return values


@pytest.mark.parametrize("numbers", [(2, 3, 4), (1, 1, 9), (5, 5, 5, 2), (7, 1, 8, 3), (2, 9)])
def test_solver_matches_an_independent_enumeration(numbers):
    assert set(solve(numbers)) == reachable_by_expressions(numbers)
    assert set(solve(numbers, "+-")) == reachable_by_expressions(numbers, "+-")


def test_every_solver_answer_verifies_and_groups_by_its_key():
    for numbers in [(2, 3, 4, 6), (8, 6, 2, 6), (1, 2, 3, 4), (3, 3, 9)]:
        for target, seqs in solve(numbers).items():
            groups = group_solutions(numbers, seqs)
            for key, group in groups.items():
                for seq in group:
                    v = check_solution(format_trace(seq), numbers, target)
                    assert v.correct, (numbers, target, seq, v.reason)
                    assert v.key == key


def test_generated_problems_are_solvable_with_several_answers():
    cfg = TaskConfig(n_numbers=(3, 4), min_solutions=2, target_min=10, target_max=40)
    problems = generate_problems(cfg, 40, seed=0)
    for p in problems:
        assert cfg.target_min <= p.target <= cfg.target_max and p.target not in p.numbers
        assert p.n_solutions >= 2 and len(p.numbers) in (3, 4)
        assert all(cfg.min_value <= n <= cfg.max_value for n in p.numbers)
        for key, seqs in p.solutions.items():
            assert check_solution(format_trace(seqs[0]), p.numbers, p.target).key == key
    assert len({p.key for p in problems}) == len(problems)


def test_difficulty_knobs_are_honoured():
    cfg = TaskConfig(n_numbers=4, min_solutions=3, max_solutions=5, min_shortest_steps=2, max_shortest_steps=2)
    for p in generate_problems(cfg, 20, seed=3):
        assert 3 <= p.n_solutions <= 5 and p.min_steps == 2 and len(p.numbers) == 4
    for p in generate_problems(TaskConfig(n_numbers=4, ops="+-", target_min=5, target_max=20, min_solutions=2), 10,
                               seed=1):
        assert all(op in "+-" for seqs in p.solutions.values() for seq in seqs for _, op, _, _ in seq)
        assert p.prompt().endswith(" with +-")


def test_generation_is_reproducible_and_seed_dependent():
    cfg = TaskConfig()
    a, b = generate_problems(cfg, 30, seed=7), generate_problems(cfg, 30, seed=7)
    assert [(p.numbers, p.target) for p in a] == [(p.numbers, p.target) for p in b]
    c = generate_problems(cfg, 30, seed=8)
    assert [(p.numbers, p.target) for p in a] != [(p.numbers, p.target) for p in c]


def test_exclusion_keeps_splits_disjoint():
    cfg = TaskConfig()
    test = generate_problems(cfg, 30, seed=1)
    train = generate_problems(cfg, 60, seed=2, exclude={p.key for p in test})
    assert not {p.key for p in test} & {p.key for p in train}


def test_sampled_traces_are_valid_and_diverse():
    p = next(p for p in generate_problems(TaskConfig(n_numbers=4, min_solutions=4), 20, seed=0))
    rng = random.Random(0)
    traces = [sample_trace(p, rng) for _ in range(200)]
    verdicts = [check_solution(t, p.numbers, p.target) for t in traces]
    assert all(v.correct for v in verdicts)
    assert len({v.key for v in verdicts}) == p.n_solutions  # every distinct answer is demonstrated
    short = [check_solution(sample_trace(p, rng, max_steps=2), p.numbers, p.target) for _ in range(50)]
    assert all(v.correct and len(v.steps) <= 2 for v in short)


@pytest.mark.parametrize("kwargs,name", [
    ({"n_numbers": 6}, "n_numbers"), ({"ops": "+/"}, "ops"), ({"min_value": 5, "max_value": 2}, "max_value"),
    ({"min_solutions": 0}, "min_solutions"), ({"min_shortest_steps": 3, "n_numbers": 3}, "min_shortest_steps"),
    ({"target_min": 50, "target_max": 10}, "target_max"),
])
def test_bad_knobs_name_the_parameter(kwargs, name):
    with pytest.raises(TaskConfigError, match=name):
        TaskConfig(**kwargs)


def test_unsatisfiable_config_fails_clearly():
    with pytest.raises(TaskConfigError, match="no problem satisfies"):
        generate_problems(TaskConfig(n_numbers=2, target_min=90, target_max=99, min_solutions=2), 1, seed=0)
