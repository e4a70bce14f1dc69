"""Exact verifier and verl reward function for the demo's countdown task (standard library only).

The task ("countdown with worked steps"): given a few numbers and a target, write arithmetic steps,
one per line, each of the form ``a op b = c`` with ``op`` in ``+ - *``. Every operand must be a given
number or the result of an earlier step, and each given number and each result can be used at
most once. Results are non-negative integers (the grammar has no minus sign), and the result of the
last step must equal the target. For the numbers 3 7 9 and the target 12 there are two distinct
answers, ``3+9=12`` and ``3*7=21`` then ``21-9=12`` (written on two lines); ``9+3=12`` is the same
answer as the first (see :func:`answer_key`).

This module is self-contained on purpose: verl loads it by file path
(``reward.custom_reward_function.path``) in its reward workers, so it must not depend on relative
imports. It never evaluates model text as code: each step is matched by a regular expression and
computed with integer arithmetic.

verl 0.9.1's reward managers (``verl/experimental/reward_loop/reward_manager/naive.py``) call
``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **reward_kwargs)``
with the response decoded with ``skip_special_tokens=True``. A dict result is split into the
scalar reward (``score``) and ``reward_extra_info`` (the other keys; verl's validation turns ``acc``
into ``mean@n``/``best@n`` = pass@k figures).
"""

# No ``from __future__ import annotations`` here: verl loads this file with importlib without
# registering it in sys.modules, and dataclasses cannot resolve string annotations in that case.
import json
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

__all__ = [
    "DATA_SOURCE", "MAX_SOLUTION_CHARS", "Verdict", "answer_key", "canonical_key", "check_solution", "compute_score",
    "parse_ground_truth", "parse_steps", "ParseError",
]

DATA_SOURCE = "papo_demo/countdown"
ALL_OPS = "+-*"
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul}
# A response longer than this cannot be a sensible answer (the demo caps responses at a few dozen
# tokens); rejecting it up front bounds the verifier's work on adversarial text.
MAX_SOLUTION_CHARS = 2000
_MAX_STEPS = 16

_STEP_RE = re.compile(r"^\s*([0-9]{1,6})\s*([+\-*])\s*([0-9]{1,6})\s*=\s*([0-9]{1,12})\s*$")  # ASCII digits only
_SEPARATORS = re.compile(r"[\n;,]")
# verl decodes responses with skip_special_tokens=True; should a caller keep them, the end-of-turn
# marker the policy stops at is not part of the answer.
_TRAILING_SPECIAL = re.compile(r"(?:<\|im_end\|>|<\|endoftext\|>)+\s*$")


class ParseError(ValueError):
    """The response is not a list of ``a op b = c`` steps."""


@dataclass(frozen=True)
class Step:
    left: int
    op: str
    right: int
    result: int

    def __str__(self) -> str:
        return f"{self.left}{self.op}{self.right}={self.result}"


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one response: ``correct`` is the reward, ``reason`` says why not."""

    correct: bool
    well_formed: bool
    reason: str
    steps: tuple = field(default=())
    key: Optional[str] = None  # canonical form of the final expression (distinct answers), when correct


def _int(text: str) -> int:
    if len(text) > 1 and text[0] == "0":
        raise ParseError(f"number with a leading zero: {text!r}")
    return int(text)


def parse_steps(text: str) -> list[Step]:
    """Split a response into steps; raises :class:`ParseError` naming the first bad part."""
    if not isinstance(text, str):
        raise ParseError(f"response must be a string, got {type(text).__name__}")
    if len(text) > MAX_SOLUTION_CHARS:
        raise ParseError(f"response longer than {MAX_SOLUTION_CHARS} characters")
    parts = [p for p in _SEPARATORS.split(text) if p.strip()]
    if not parts:
        raise ParseError("empty response: expected steps like '7+9=16'")
    if len(parts) > _MAX_STEPS:
        raise ParseError(f"more than {_MAX_STEPS} steps")
    steps = []
    for part in parts:
        m = _STEP_RE.match(part)
        if m is None:
            raise ParseError(f"not a step of the form 'a op b = c': {part.strip()!r}")
        steps.append(Step(_int(m.group(1)), m.group(2), _int(m.group(3)), _int(m.group(4))))
    return steps


# ---------------------------------------------------------------------------------------------
# Canonical form of an expression: sums/differences flattened into sorted signed terms, products
# into sorted factors. "9-3+4", "(9+4)-3" and "4+(9-3)" share one key; "3*4+5" and "5+4*3" too.
# ---------------------------------------------------------------------------------------------

def _terms(tree: tuple, sign: int, out: list) -> None:
    if tree[0] == "+":
        _terms(tree[1], sign, out)
        _terms(tree[2], sign, out)
    elif tree[0] == "-":
        _terms(tree[1], sign, out)
        _terms(tree[2], -sign, out)
    else:
        out.append((sign, canonical_key(tree)))


def _factors(tree: tuple, out: list) -> None:
    if tree[0] == "*":
        _factors(tree[1], out)
        _factors(tree[2], out)
    else:
        out.append(canonical_key(tree))


def canonical_key(tree: tuple) -> str:
    """Canonical text of an expression tree (``("n", v)`` leaves, ``(op, left, right)`` nodes)."""
    kind = tree[0]
    if kind == "n":
        return str(tree[1])
    if kind in "+-":
        terms: list = []
        _terms(tree, 1, terms)
        pos = sorted(t for s, t in terms if s > 0)
        neg = sorted(t for s, t in terms if s < 0)
        return "(" + "+".join(pos) + "".join("-" + t for t in neg) + ")"
    factors: list = []
    _factors(tree, factors)
    return "(" + "*".join(sorted(factors)) + ")"


def answer_key(steps, numbers: Iterable[int]) -> str:
    """Canonical form of the expression a valid step list computes (the "distinct answer" identity).

    Text can be ambiguous when a step result equals a given number ("8-6=2" then "2+6=8" with a
    2 given): either may feed a later step. Every reading is tried; those in which all steps feed
    the last one are preferred, and the smallest canonical key among them is the answer's key, so
    the key is a function of the text alone. The solver groups solutions with this same function.
    """
    steps = [s if isinstance(s, Step) else Step(*s) for s in steps]
    best: list = [None, None]  # [best key with no dead step, best key overall]

    def rec(k: int, leaves: dict, results: tuple, last) -> None:
        if k == len(steps):
            tree, inside = last
            key = canonical_key(tree)
            if best[1] is None or key < best[1]:
                best[1] = key
            if inside == len(steps) and (best[0] is None or key < best[0]):
                best[0] = key
            return
        st = steps[k]
        for left, leaves1, results1 in _choices(st.left, leaves, results):
            for right, leaves2, results2 in _choices(st.right, leaves1, results1):
                node = ((st.op, left[0], right[0]), left[1] + right[1] + 1)
                rec(k + 1, leaves2, results2 + ((st.result,) + node,), node)

    if len(steps) > _MAX_KEY_SEARCH_STEPS:  # long texts: take the most recent result (one reading)
        return _greedy_key(steps)
    leaves: dict = {}
    for n in numbers:
        leaves[n] = leaves.get(n, 0) + 1
    rec(0, leaves, (), None)
    if best[1] is None:
        raise ValueError(f"answer_key: the steps {[str(s) for s in steps]} do not use the numbers {list(numbers)} "
                         "validly; call check_solution first")
    return best[0] if best[0] is not None else best[1]


_MAX_KEY_SEARCH_STEPS = 6


def _choices(value: int, leaves, results: tuple):
    """Ways to consume ``value``: each distinct unconsumed step result with it, or a given number."""
    seen = set()
    for i in range(len(results) - 1, -1, -1):
        v, tree, inside = results[i]
        if v == value and (tree, inside) not in seen:
            seen.add((tree, inside))
            yield (tree, inside), leaves, results[:i] + results[i + 1:]
    if leaves.get(value, 0) > 0:
        new = dict(leaves)
        new[value] -= 1
        yield (("n", value), 0), new, results


def _greedy_key(steps) -> str:
    results: list = []
    last = None
    for st in steps:
        subtrees = []
        for value in (st.left, st.right):
            for i in range(len(results) - 1, -1, -1):
                if results[i][0] == value:
                    subtrees.append(results.pop(i)[1])
                    break
            else:
                subtrees.append(("n", value))
        last = (st.op, subtrees[0], subtrees[1])
        results.append((st.result, last))
    return canonical_key(last)


def check_solution(text: str, numbers: Iterable[int], target: int, ops: str = ALL_OPS) -> Verdict:
    """Check a response against the rules; never raises on model output."""
    numbers = list(numbers)
    try:
        steps = parse_steps(text)
    except ParseError as exc:
        return Verdict(False, False, str(exc))
    # Multiset of available values: given numbers, then step results as they appear. Which
    # occurrence of a value is consumed does not change what stays available.
    pool: dict[int, int] = {}
    for n in numbers:
        pool[n] = pool.get(n, 0) + 1
    for step in steps:
        if step.op not in ops:
            return Verdict(False, True, f"operator {step.op!r} not allowed (allowed: {' '.join(ops)})", tuple(steps))
        if _APPLY[step.op](step.left, step.right) != step.result:
            return Verdict(False, True, f"wrong arithmetic in {step}", tuple(steps))
        for value in (step.left, step.right):
            if pool.get(value, 0) <= 0:
                return Verdict(False, True, f"{value} in {step} is not available (each number at most once)",
                               tuple(steps))
            pool[value] -= 1
        pool[step.result] = pool.get(step.result, 0) + 1
    final = steps[-1].result
    if final != target:
        return Verdict(False, True, f"final result {final} is not the target {target}", tuple(steps))
    return Verdict(True, True, "correct", tuple(steps), answer_key(steps, numbers))


def parse_ground_truth(ground_truth: Any) -> tuple[list[int], int]:
    """``ground_truth`` as stored in the parquet: JSON text ``{"numbers": [...], "target": n}`` (or a dict)."""
    gt = ground_truth
    if isinstance(gt, (str, bytes)):
        try:
            gt = json.loads(gt)
        except json.JSONDecodeError as exc:
            raise ValueError(f"papo demo reward: ground_truth is not JSON ({exc}): {ground_truth!r}; expected "
                             '\'{"numbers": [3, 7, 9], "target": 16}\' as written by papo_verl.demo.data') from None
    if not isinstance(gt, Mapping) or "numbers" not in gt or "target" not in gt:
        raise ValueError(f"papo demo reward: ground_truth must have 'numbers' and 'target', got {ground_truth!r}")
    numbers = [int(n) for n in gt["numbers"]]
    if not numbers or any(n < 0 for n in numbers):
        raise ValueError(f"papo demo reward: ground_truth numbers must be non-negative integers, got {gt['numbers']!r}")
    return numbers, int(gt["target"])


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Optional[dict] = None,
                  format_bonus: float = 0.0, **kwargs) -> dict:
    """verl reward function: ``score`` is 1.0 for a correct solution, else 0.0 (deterministic).

    ``format_bonus`` (default 0, settable through ``reward.custom_reward_function.reward_kwargs``)
    adds that much to well-formed but wrong answers. It stays 0 in the demo: the pre-trained policy
    already writes well-formed steps almost always, so the bonus would only add a constant and blur
    ``score`` = ``acc`` = pass@1. Other keyword arguments verl may pass are accepted and ignored.
    """
    if data_source != DATA_SOURCE:
        raise ValueError(f"papo demo reward: data_source {data_source!r} is not {DATA_SOURCE!r}; this reward "
                         "function only scores the demo's countdown data (papo_verl.demo.data)")
    numbers, target = parse_ground_truth(ground_truth)
    if isinstance(solution_str, str):
        solution_str = _TRAILING_SPECIAL.sub("", solution_str)
    ops = ALL_OPS
    if isinstance(extra_info, Mapping) and extra_info.get("ops"):
        ops = str(extra_info["ops"])
    verdict = check_solution(solution_str, numbers, target, ops)
    score = 1.0 if verdict.correct else (float(format_bonus) if verdict.well_formed else 0.0)
    return {"score": score, "acc": 1.0 if verdict.correct else 0.0, "well_formed": 1.0 if verdict.well_formed else 0.0}
