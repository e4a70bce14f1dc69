"""The demo's verifiable task: countdown with worked steps, several valid answers per problem.

A problem is a handful of small numbers and a target. A solution is a list of steps ``a op b = c``
(``op`` in ``+ - *``, non-negative integer results) where each given number and each step result
is used at most once and the last result is the target. The rules and the exact checker live in
:mod:`papo_verl.demo.reward`; this module has the seeded generator and the brute-force solver.

Why this task suits an entropy study (PAPO vs GRPO): every generated problem has at least
``min_solutions`` genuinely different answers (distinct up to commutativity/associativity), so
a policy can be right in several ways. A policy whose entropy collapses onto one answer per
problem keeps pass@1 but loses pass@k and the number of distinct correct answers it finds; a
policy that keeps exploring does not. The answers also differ in difficulty: a one-step answer
(a pair that gives the target) is much easier for a small model than a two-step one, which is
exactly the kind of easy mode a collapsing policy concentrates on. Answers are short (1-3 steps,
at most ~20 tokens), so a tiny model and a CPU rollout can handle it.

The defaults (:class:`TaskConfig`) are the demo's: 4 numbers in 2..9, targets 10..40, at least 3
distinct answers per problem, the shortest of at most 2 steps.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from typing import Iterator, Optional

from papo_verl.demo.reward import ALL_OPS, DATA_SOURCE, answer_key

__all__ = ["Problem", "TaskConfig", "TaskConfigError", "format_prompt", "format_trace", "generate_problems",
           "group_solutions", "iter_problems", "make_problem", "problem_record", "sample_trace", "solve"]


class TaskConfigError(ValueError):
    """A task parameter is out of range; the message names it and the valid range."""


@dataclass(frozen=True)
class TaskConfig:
    """Difficulty knobs of the generator.

    * ``n_numbers``: how many numbers a problem gives (one value or several to mix).
    * ``min_value``/``max_value``: range of the given numbers.
    * ``ops``: allowed operators, a subset of ``"+-*"``.
    * ``target_min``/``target_max``: range of targets; a target never equals a given number.
    * ``min_solutions``/``max_solutions``: bounds on the number of distinct valid answers.
    * ``min_shortest_steps``/``max_shortest_steps``: bounds on the length of the shortest solution
      (``min_shortest_steps=2`` forbids targets reachable in one step; ``max_shortest_steps=2`` keeps
      problems that have a short answer, even with 4 numbers).
    """

    n_numbers: tuple = (4,)
    min_value: int = 2
    max_value: int = 9
    ops: str = ALL_OPS
    target_min: int = 10
    target_max: int = 40
    min_solutions: int = 3
    max_solutions: Optional[int] = None
    min_shortest_steps: int = 1
    max_shortest_steps: Optional[int] = 2

    def __post_init__(self):
        n = (self.n_numbers,) if isinstance(self.n_numbers, int) else tuple(self.n_numbers)
        object.__setattr__(self, "n_numbers", n)
        if not n or any(not isinstance(k, int) or not 2 <= k <= 5 for k in n):
            raise TaskConfigError(f"TaskConfig.n_numbers must be integers in [2, 5], got {self.n_numbers!r}")
        if not 0 <= self.min_value <= self.max_value <= 99:
            raise TaskConfigError(f"TaskConfig needs 0 <= min_value <= max_value <= 99, got "
                                  f"{self.min_value}..{self.max_value}")
        if not self.ops or any(o not in ALL_OPS for o in self.ops) or len(set(self.ops)) != len(self.ops):
            raise TaskConfigError(f"TaskConfig.ops must be distinct operators from {ALL_OPS!r}, got {self.ops!r}")
        if not 0 <= self.target_min <= self.target_max:
            raise TaskConfigError(f"TaskConfig needs 0 <= target_min <= target_max, got "
                                  f"{self.target_min}..{self.target_max}")
        if self.min_solutions < 1 or (self.max_solutions is not None and self.max_solutions < self.min_solutions):
            raise TaskConfigError(f"TaskConfig needs 1 <= min_solutions <= max_solutions, got "
                                  f"{self.min_solutions}, {self.max_solutions}")
        if not 1 <= self.min_shortest_steps < max(n):
            raise TaskConfigError(f"TaskConfig.min_shortest_steps must be in [1, max(n_numbers) - 1], got "
                                  f"{self.min_shortest_steps}")
        if self.max_shortest_steps is not None and self.max_shortest_steps < self.min_shortest_steps:
            raise TaskConfigError(f"TaskConfig.max_shortest_steps ({self.max_shortest_steps}) must be >= "
                                  f"min_shortest_steps ({self.min_shortest_steps})")


@dataclass(frozen=True)
class Problem:
    numbers: tuple
    target: int
    ops: str
    solutions: dict  # canonical key -> tuple of step sequences, each a tuple of (a, op, b, c)

    @property
    def n_solutions(self) -> int:
        return len(self.solutions)

    @property
    def min_steps(self) -> int:
        return min(len(seq) for seqs in self.solutions.values() for seq in seqs)

    @property
    def key(self) -> tuple:
        """Identity up to the order of the numbers (used to keep splits disjoint)."""
        return (tuple(sorted(self.numbers)), self.target)

    def ground_truth(self) -> str:
        return json.dumps({"numbers": list(self.numbers), "target": self.target})

    def prompt(self) -> str:
        return format_prompt(self.numbers, self.target, self.ops)

    def messages(self) -> list:
        return [{"role": "user", "content": self.prompt()}]


def format_prompt(numbers, target: int, ops: str = ALL_OPS) -> str:
    """``"Make 16 from 2 2 6 3 with +-*"``: short on purpose (every prompt token costs CPU time in
    pre-training and rollout); the rules (each number at most once, one ``a op b = c`` step per
    line) are those of :mod:`papo_verl.demo.reward` and are learnt from the demonstrations."""
    return f"Make {target} from {' '.join(str(n) for n in numbers)} with {ops}"


def format_trace(steps) -> str:
    return "\n".join(f"{a}{op}{b}={c}" for a, op, b, c in steps)


def solve(numbers, ops: str = ALL_OPS) -> dict:
    """Brute force: ``{value: [step sequences]}`` for every value some step sequence reaches.

    A step sequence is a tuple of ``(a, op, b, c)`` whose steps all feed the last one (no dead
    steps): one linearisation of an expression tree over a sub-multiset of ``numbers``. ``+`` and
    ``*`` are enumerated with one operand order (the trace sampler randomises it), ``-`` only when
    the result is non-negative. Use :func:`group_solutions` to group them into distinct answers.
    """
    out: dict = {}
    seen: set = set()

    def rec(pool: tuple, steps: tuple) -> None:
        # pool: (value, subtree id, number of steps inside); steps: the steps taken so far, in order
        m = len(pool)
        for i in range(m):
            for j in range(m):
                if i == j:
                    continue
                (a, ta, sa), (b, tb, sb) = pool[i], pool[j]
                for op in ops:
                    if op in "+*" and i > j:
                        continue  # commutative: one operand order
                    if op == "-" and a < b:
                        continue
                    c = a + b if op == "+" else a - b if op == "-" else a * b
                    new_steps = steps + ((a, op, b, c),)
                    if new_steps in seen:  # repeated numbers give the same sequence twice
                        continue
                    seen.add(new_steps)
                    n_inside = sa + sb + 1
                    if n_inside == len(new_steps):  # every earlier step feeds this one: a complete solution
                        out.setdefault(c, []).append(new_steps)
                    rest = tuple(p for k, p in enumerate(pool) if k not in (i, j))
                    if rest:
                        rec(rest + ((c, None, n_inside),), new_steps)

    rec(tuple((n, None, 0) for n in numbers), ())
    return out


def group_solutions(numbers, sequences) -> dict:
    """``{answer key: (step sequences...)}``, keys sorted; the key is :func:`~papo_verl.demo.reward.answer_key`."""
    groups: dict = {}
    for seq in sequences:
        groups.setdefault(answer_key(seq, numbers), []).append(seq)
    return {key: tuple(groups[key]) for key in sorted(groups)}


@functools.lru_cache(maxsize=None)
def _candidates(numbers: tuple, ops: str, target_min: int, target_max: int, min_solutions: int,
                max_solutions: Optional[int], min_shortest: int, max_shortest: Optional[int]) -> tuple:
    """Valid ``(target, solutions)`` pairs for a sorted multiset of numbers (memoised: the space is small)."""
    table = solve(numbers, ops)
    out = []
    for target in range(target_min, target_max + 1):
        seqs = table.get(target)
        if not seqs or target in numbers:
            continue
        shortest = min(len(seq) for seq in seqs)
        if shortest < min_shortest or (max_shortest is not None and shortest > max_shortest):
            continue
        sols = group_solutions(numbers, seqs)
        if len(sols) < min_solutions or (max_solutions is not None and len(sols) > max_solutions):
            continue
        out.append((target, sols))
    return tuple(out)


def make_problem(rng: random.Random, config: TaskConfig, max_tries: int = 1000) -> Problem:
    """One random problem satisfying the config (raises :class:`TaskConfigError` if none is found).

    The numbers are drawn independently and uniformly, the target uniformly among the values in
    range that meet the solution-count and step constraints.
    """
    for _ in range(max_tries):
        k = rng.choice(config.n_numbers)
        numbers = tuple(rng.randint(config.min_value, config.max_value) for _ in range(k))
        candidates = _candidates(tuple(sorted(numbers)), config.ops, config.target_min, config.target_max,
                                 config.min_solutions, config.max_solutions, config.min_shortest_steps,
                                 config.max_shortest_steps)
        if candidates:
            target, sols = candidates[rng.randrange(len(candidates))]
            return Problem(numbers, target, config.ops, sols)
    raise TaskConfigError(f"no problem satisfies {config} after {max_tries} draws; widen target_min/target_max, "
                          "lower min_solutions/min_shortest_steps or raise max_solutions/max_shortest_steps")


def generate_problems(config: TaskConfig, n: int, seed: int, exclude: Optional[set] = None) -> list[Problem]:
    """``n`` problems with distinct :attr:`Problem.key`, none in ``exclude``; reproducible from ``seed``."""
    rng = random.Random(seed)
    exclude = set(exclude or ())
    problems: list[Problem] = []
    misses = 0
    while len(problems) < n:
        p = make_problem(rng, config)
        if p.key in exclude:
            misses += 1
            if misses > 50 * n + 1000:
                raise TaskConfigError(f"only {len(problems)} distinct problems found for n={n} with {config}; "
                                      "the problem space is too small: widen the value or target range")
            continue
        exclude.add(p.key)
        problems.append(p)
    return problems


def iter_problems(config: TaskConfig, seed: int, exclude: Optional[set] = None) -> Iterator[Problem]:
    """Endless stream of problems (repeats allowed) whose keys are not in ``exclude``."""
    rng = random.Random(seed)
    exclude = set(exclude or ())
    while True:
        p = make_problem(rng, config)
        if p.key not in exclude:
            yield p


def sample_trace(problem: Problem, rng: random.Random, max_steps: Optional[int] = None) -> str:
    """A uniformly chosen distinct answer, in a random valid step order and operand order.

    ``max_steps``: only answers whose shortest writing has at most this many steps are shown
    (falls back to all answers when the problem has none that short).
    """
    keys = sorted(problem.solutions)
    if max_steps is not None:
        short = [k for k in keys if min(len(s) for s in problem.solutions[k]) <= max_steps]
        keys = short or keys
    key = keys[rng.randrange(len(keys))]
    seqs = problem.solutions[key]
    if max_steps is not None:
        seqs = [s for s in seqs if len(s) <= max_steps] or seqs
    steps = seqs[rng.randrange(len(seqs))]
    out = []
    for a, op, b, c in steps:
        if op in "+*" and rng.random() < 0.5:
            a, b = b, a
        out.append((a, op, b, c))
    return format_trace(out)


def problem_record(problem: Problem, split: str, index: int) -> dict:
    """One row of verl's RL parquet schema (``data.prompt_key=prompt``, ``data.reward_fn_key=data_source``)."""
    return {
        "data_source": DATA_SOURCE,
        "prompt": problem.messages(),
        "ability": "arithmetic",
        "reward_model": {"style": "rule", "ground_truth": problem.ground_truth()},
        "extra_info": {
            "split": split,
            "index": index,
            "ops": problem.ops,
            "n_solutions": problem.n_solutions,
            "min_steps": problem.min_steps,
        },
    }
