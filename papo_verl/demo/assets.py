"""``ensure_assets()``: the demo's tiny pre-trained policy, data and reward, built once and cached.

A cache entry is ``<cache_dir>/<key>/`` where ``key`` hashes the whole recipe (task parameters,
split sizes and seeds, tokenizer and model shape, pre-training hyper-parameters, evaluation
settings), the source of the modules that produce the assets and the torch/transformers
versions. A changed recipe gives a new key and a new build; an existing entry is reused as is.
Entries are built in a temporary folder next to the cache and renamed into place when complete,
so a finished entry is never modified and an interrupted build leaves no half entry behind.

Layout of an entry::

    model/              tokenizer + Qwen2ForCausalLM (AutoModelForCausalLM.from_pretrained(model/))
    data/train.parquet  RL prompts (verl schema, see papo_verl.demo.data)
    data/test.parquet   held-out prompts (validation)
    manifest.json       recipe, key, pre-training log and the evaluation figures
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from papo_verl.demo.pretrain import ModelConfig, PretrainConfig
from papo_verl.demo.task import TaskConfig

__all__ = ["DemoAssetError", "DemoAssets", "DemoRecipe", "check_model_dir", "default_cache_dir", "ensure_assets",
           "recipe_key"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_SOURCES = ("papo_verl/demo/tiny.py", "papo_verl/demo/task.py", "papo_verl/demo/reward.py", "papo_verl/demo/data.py",
            "papo_verl/demo/pretrain.py", "papo_verl/demo/evaluate.py", "papo_verl/demo/assets.py")
_REPO = Path(__file__).resolve().parents[2]


class DemoAssetError(RuntimeError):
    """A demo asset (model folder, cache entry) is missing or unusable; the message says how to fix it."""


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that determines the demo assets (hashed into the cache key).

    Defaults (chosen by measurement on a 2-core CPU): the task of :class:`TaskConfig` (4 numbers
    in 2..9, targets 10..40, at least 3 distinct answers, the shortest in at most 2 steps); a 1.0M-parameter Qwen2 (4 layers, width 128) pre-trained for 800 steps of 32 traces
    (about 2 minutes on one core), which solves a minority of the test problems at T=1.
    """

    task: TaskConfig = field(default_factory=TaskConfig)
    # RL prompts: problems that also have a one-step answer. Reinforcing that short answer raises the
    # reward within a few dozen steps and narrows the answers given (entropy and pass@k on the mixed
    # test set fall): the collapse PAPO is meant to counter. The test set keeps the general mix.
    rl_task: TaskConfig = field(default_factory=lambda: TaskConfig(n_numbers=(4,), min_value=2, max_value=9,
                                                                   target_min=10, target_max=40, min_solutions=3,
                                                                   max_shortest_steps=1))
    n_test: int = 256  # held-out problems: pass@k's standard error ≈ 0.03 at 16 samples each
    n_train: int = 768  # the default RL task has ~1000 problems beside the test set
    data_seed: int = 1234
    vocab_size: int = 320
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    trace_max_steps: Optional[int] = 2  # demonstrations show answers of at most this many steps
    eval_samples: int = 16
    eval_max_new_tokens: int = 24
    eval_seed: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "DemoRecipe":
        return dataclasses.replace(self, **changes)

    def with_task(self, changes: dict) -> "DemoRecipe":
        """The same recipe with ``changes`` (:class:`TaskConfig` fields) applied to the test/pre-training task
        and to the RL prompts' task alike; unknown fields raise ``ValueError`` naming the valid ones."""
        if not changes:
            return self
        fields = {f.name for f in dataclasses.fields(TaskConfig)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise ValueError(f"unknown task field(s) {', '.join(unknown)}; TaskConfig has {', '.join(sorted(fields))}")
        return dataclasses.replace(self, task=dataclasses.replace(self.task, **changes),
                                   rl_task=dataclasses.replace(self.rl_task, **changes))


def recipe_key(recipe: DemoRecipe) -> str:
    """Cache key: hash of the recipe, the producing code and the torch/transformers versions."""
    import torch
    import transformers

    code = hashlib.sha256()
    for rel in _SOURCES:
        code.update(rel.encode())
        code.update((_REPO / rel).read_bytes())
    payload = {"format": FORMAT_VERSION, "recipe": recipe.to_dict(), "code": code.hexdigest()[:16],
               "torch": torch.__version__, "transformers": transformers.__version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def default_cache_dir() -> str:
    """``$PAPO_DEMO_CACHE`` if set, else ``<repo>/.cache/papo_demo``."""
    return os.environ.get("PAPO_DEMO_CACHE") or str(_REPO / ".cache" / "papo_demo")


@dataclass
class DemoAssets:
    """What the demo runner needs; paths are absolute."""

    model_dir: str
    train_parquet: str
    test_parquet: str
    reward_path: str
    reward_name: str
    figures: dict  # evaluation of the pre-trained policy on the test set (pass@k, entropy, ...)
    key: str = ""
    entry_dir: str = ""
    data_source: str = ""
    max_prompt_tokens: int = 0  # longest rendered test/train prompt: a floor for data.max_prompt_length
    max_response_tokens: int = 0  # the response budget the policy was evaluated with (data.max_response_length)
    pretrain: dict = field(default_factory=dict)  # wall time, parameters, loss curve
    built: bool = False  # True when this call built the entry, False when it was reused

    def verl_overrides(self) -> list:
        """Hydra overrides that point verl's trainer at these assets (data, model, reward, lengths)."""
        return [
            f"data.train_files={self.train_parquet}", f"data.val_files={self.test_parquet}",
            f"data.max_prompt_length={self.max_prompt_tokens}", f"data.max_response_length={self.max_response_tokens}",
            f"actor_rollout_ref.model.path={self.model_dir}",
            f"reward.custom_reward_function.path={self.reward_path}",
            f"reward.custom_reward_function.name={self.reward_name}",
        ]

    def summary(self) -> str:
        f = self.figures
        ks = ", ".join(f"pass@{k} {v:.3f}" for k, v in sorted(f.get("pass_at", {}).items(), key=lambda kv: int(kv[0])))
        return (f"policy {self.pretrain.get('n_params', 0) / 1e6:.2f}M params at {self.model_dir}; test set: {ks}; "
                f"entropy {f.get('mean_entropy', float('nan')):.3f} nats/token; distinct correct answers "
                f"{f.get('distinct_correct', float('nan')):.2f}/problem")


def check_model_dir(model_dir: str) -> None:
    """Raise :class:`DemoAssetError` unless ``model_dir`` holds a loadable HF causal LM with a chat template."""
    fix = "build it with papo_verl.demo.assets.ensure_assets() (or pass rebuild=True if the cache is damaged)"
    if not model_dir or not os.path.isdir(model_dir):
        raise DemoAssetError(f"model folder {model_dir!r} does not exist; {fix}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise DemoAssetError(f"model folder {model_dir!r} has no config.json; {fix}")
    if not any(n.endswith(".safetensors") or n.endswith(".bin") for n in os.listdir(model_dir)):
        raise DemoAssetError(f"model folder {model_dir!r} has no weights (*.safetensors); {fix}")
    if not os.path.isfile(os.path.join(model_dir, "tokenizer_config.json")):
        raise DemoAssetError(f"model folder {model_dir!r} has no tokenizer (tokenizer_config.json); {fix}")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tok, "chat_template", None):
        raise DemoAssetError(f"the tokenizer in {model_dir!r} has no chat_template, so verl cannot render chat "
                             f"prompts; {fix}")
    if tok.eos_token != "<|im_end|>":
        raise DemoAssetError(f"the tokenizer in {model_dir!r} ends turns with {tok.eos_token!r}, not <|im_end|>; {fix}")


def _assets_from_entry(entry: Path, built: bool) -> DemoAssets:
    from papo_verl.demo import reward

    manifest = json.loads((entry / MANIFEST).read_text())
    return DemoAssets(
        model_dir=str(entry / "model"), train_parquet=str(entry / "data" / "train.parquet"),
        test_parquet=str(entry / "data" / "test.parquet"), reward_path=str(Path(reward.__file__).resolve()),
        reward_name="compute_score", figures=manifest["figures"], key=manifest["key"], entry_dir=str(entry),
        data_source=reward.DATA_SOURCE, max_prompt_tokens=manifest["max_prompt_tokens"],
        max_response_tokens=manifest["max_response_tokens"], pretrain=manifest["pretrain"], built=built,
    )


def _entry_complete(entry: Path) -> bool:
    return ((entry / MANIFEST).is_file() and (entry / "model" / "config.json").is_file()
            and (entry / "data" / "train.parquet").is_file() and (entry / "data" / "test.parquet").is_file())


def build_entry(recipe: DemoRecipe, out: Path, log: Callable[[str], None]) -> dict:
    """Build every asset of ``recipe`` into the (empty) folder ``out``; returns the manifest."""
    from papo_verl.demo import tiny
    from papo_verl.demo.data import check_dataset, write_parquet
    from papo_verl.demo.evaluate import evaluate_policy
    from papo_verl.demo.heldout import HELD_OUT_KS
    from papo_verl.demo.pretrain import pretrain, trace_stream
    from papo_verl.demo.task import generate_problems, iter_problems, sample_trace

    t_start = time.time()
    # 1. problems: test, RL train and pre-training problems are pairwise disjoint (by numbers + target)
    test = generate_problems(recipe.task, recipe.n_test, seed=recipe.data_seed)
    train = generate_problems(recipe.rl_task, recipe.n_train, seed=recipe.data_seed + 1, exclude={p.key for p in test})
    held = {p.key for p in test} | {p.key for p in train}
    # pre-training problems: the generator's distribution minus the held-out ones (repeats allowed)
    sft = iter_problems(recipe.task, seed=recipe.data_seed + 2, exclude=held)
    log(f"problems: {len(test)} test, {len(train)} RL train; pre-training draws from the rest "
        f"({time.time() - t_start:.1f}s)")
    write_parquet(train, str(out / "data" / "train.parquet"), "train")
    write_parquet(test, str(out / "data" / "test.parquet"), "test")

    # 2. tokenizer (byte-level BPE trained on rendered chats of the task) and a random Qwen2 policy
    model_dir = out / "model"
    rng = random.Random(recipe.data_seed)
    corpus = [tiny_chat(p.prompt(), sample_trace(p, rng, recipe.trace_max_steps))
              for p, _ in zip(iter_problems(recipe.task, seed=recipe.data_seed + 3), range(2000))]
    tokenizer = tiny.build_tokenizer(str(model_dir), corpus, vocab_size=recipe.vocab_size)
    m = recipe.model
    tiny.build_model(str(model_dir), tokenizer, hidden_size=m.hidden_size, num_layers=m.num_layers,
                     num_heads=m.num_heads, num_kv_heads=m.num_kv_heads, intermediate_size=m.intermediate_size,
                     max_position_embeddings=m.max_position_embeddings, seed=recipe.pretrain.seed)

    # 3. supervised pre-training on solution traces
    p = recipe.pretrain
    log(f"pre-training a {m.num_layers}-layer, {m.hidden_size}-wide Qwen2 for {p.steps} steps of {p.batch_size} "
        f"traces on {p.threads} threads (the longest part of the build)")
    result = pretrain(str(model_dir), tokenizer, trace_stream(sft, recipe.pretrain.seed, recipe.trace_max_steps), p,
                      log=log, log_every=max(1, p.steps // 8))
    log(f"pre-training done: {result.n_params / 1e6:.2f}M parameters, loss {result.first_loss:.3f} -> "
        f"{result.final_loss:.3f} in {result.wall_s:.0f}s")

    # 4. checks through the same paths verl uses, then the figures of the pre-trained policy
    check_model_dir(str(model_dir))
    max_prompt = max(check_dataset(str(out / "data" / name), tokenizer)["max_prompt_tokens"]
                     for name in ("train.parquet", "test.parquet"))
    t_eval = time.time()
    ev = evaluate_policy(str(model_dir), str(out / "data" / "test.parquet"), n_samples=recipe.eval_samples,
                         max_new_tokens=recipe.eval_max_new_tokens, seed=recipe.eval_seed,
                         threads=recipe.pretrain.threads, ks=HELD_OUT_KS)
    log(f"pre-trained policy on the test set (T=1, {ev.n_samples} samples/problem): {ev.summary()} "
        f"({time.time() - t_eval:.0f}s)")
    return {
        "format": FORMAT_VERSION,
        "recipe": recipe.to_dict(),
        "max_prompt_tokens": max_prompt,
        "max_response_tokens": recipe.eval_max_new_tokens,
        "pretrain": {"n_params": result.n_params, "steps": result.steps, "wall_s": round(result.wall_s, 1),
                     "first_loss": result.first_loss, "final_loss": result.final_loss, "losses": result.losses},
        "figures": ev.to_dict(),
        "build_wall_s": round(time.time() - t_start, 1),
    }


@contextlib.contextmanager
def _quiet_progress_bars():
    """No per-file "Loading weights"/"Writing model shards" bars in the demo log (restored after)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def tiny_chat(prompt: str, response: str) -> str:
    """One rendered ChatML exchange (tokenizer training text)."""
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>\n"


def ensure_assets(cache_dir: Optional[str] = None, rebuild: bool = False, recipe: Optional[DemoRecipe] = None,
                  log: Optional[Callable[[str], None]] = None) -> DemoAssets:
    """Return the demo assets for ``recipe`` (default: :class:`DemoRecipe`), building them if needed.

    ``cache_dir`` defaults to ``$PAPO_DEMO_CACHE`` or ``<repo>/.cache/papo_demo``. ``rebuild=True``
    builds a fresh entry and then swaps it in for the old one (never writing into a finished
    entry). Concurrent callers wait on a lock file instead of building twice.
    """
    import fcntl

    recipe = recipe or DemoRecipe()
    log = log or (lambda msg: print(f"[papo demo assets] {msg}", file=sys.stderr, flush=True))
    cache = Path(cache_dir or default_cache_dir()).resolve()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoAssetError(f"cannot create the demo cache folder {cache} ({exc}); pass cache_dir= or set "
                             "PAPO_DEMO_CACHE to a writable folder") from exc
    key = recipe_key(recipe)
    entry = cache / key
    if _entry_complete(entry) and not rebuild:
        log(f"reusing cached assets {entry}")
        assets = _assets_from_entry(entry, built=False)
        check_model_dir(assets.model_dir)
        return assets
    with open(cache / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _entry_complete(entry) and not rebuild:  # another process built it while we waited
            log(f"reusing cached assets {entry} (built by another process)")
            return _assets_from_entry(entry, built=False)
        for stale in list(cache.glob(f".build-{key}-*")) + list(cache.glob(f".old-{key}-*")):
            shutil.rmtree(stale, ignore_errors=True)  # left by a build that was killed (we hold the lock)
        log(f"building assets {key} in {cache} (new or changed recipe; about 2-3 minutes on one core)")
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache))
        try:
            os.chmod(tmp, 0o755)
            with _quiet_progress_bars():
                manifest = build_entry(recipe, tmp, log)
            manifest["key"] = key
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            if entry.exists():  # rebuild: move the old entry aside atomically, then swap in the new one
                trash = Path(tempfile.mkdtemp(prefix=f".old-{key}-", dir=cache))
                os.rename(entry, trash / "entry")
                os.rename(tmp, entry)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log(f"assets ready in {manifest['build_wall_s']:.0f}s: {entry}")
        return _assets_from_entry(entry, built=True)
