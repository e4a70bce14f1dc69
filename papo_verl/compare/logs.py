"""Finding runs on disk and reading their metric logs (verl's file logger and tensorboard; not wandb's
offline store, which has no stable reader: ``wandb sync`` parses it in the Go core).

Every reader turns a log into *segments*, ``{step: {metric: value}}``; :func:`merge_segments` combines
a run's segments. Non-numeric values are skipped, ``null`` / NaN become "not logged", and a metric
that is never finite is dropped.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
import yaml

from papo_verl.compare.configs import config_differences

__all__ = ["CompareError", "CompareWarning", "Run", "RunSource", "discover", "merge_segments",
           "read_file_logger_records", "read_file_logger_segment", "read_metrics_log", "read_run",
           "read_tensorboard_file"]

Segment = dict[int, dict[str, float]]

CONFIG_SUFFIX = ".config.yaml"
JSONL_SUFFIX = ".jsonl"
TB_PREFIX = "events.out.tfevents."
_SEGMENT_STEM = re.compile(r"^(?P<base>.+)-(?P<k>\d+)$")
_SKIP_DIRS = {".git", "__pycache__", "node_modules", ".hydra"}
# verl's FileLogger writes {"step": s, "data": {...}}; rollout dumps (trainer.rollout_data_dir) are
# also *.jsonl but have other keys, so a *.jsonl found in a directory is a metrics log only if it has
# a resolved config beside it or its first record has exactly this shape.
_FILE_LOGGER_KEYS = {"step", "data"}
# <experiment>.eval.jsonl beside <experiment>.jsonl: metrics computed after the run (papo_verl.demo.heldout),
# in the file logger's format, merged into that run at their steps without replacing a logged value
EXTRA_SUFFIX = ".eval"
# metrics of held-out evaluations: they do not make a step a training step
HELD_OUT_METRIC_PREFIXES = ("val-", "eval/")


class CompareError(Exception):
    """A problem papo-compare cannot work around (the message names the file or run and the fix)."""


class CompareWarning(UserWarning):
    """Something the comparison works around (different horizons, configs, missing seeds...)."""


@dataclass
class RunSource:
    """Where one run's log lives: ``kind`` is ``file`` or ``tensorboard``."""

    kind: str
    segments: tuple[Path, ...]           # log files, in order
    config_paths: tuple[Optional[Path], ...] = ()  # per segment, for the file logger
    error: Optional[str] = None          # a run found but unusable (e.g. a config without its log)
    extras: tuple[Path, ...] = ()        # file logger: <experiment>.eval.jsonl, metrics added after the run

    @property
    def key(self) -> tuple:
        return (self.kind, tuple(str(p.resolve()) for p in self.segments))


@dataclass
class Run:
    """One training run: its merged metrics and resolved config.

    ``metrics`` is a float DataFrame indexed by the logged step (sorted ints), one column per metric,
    NaN where the metric was not logged at that step. ``label`` (the algorithm) and ``seed`` are
    filled in by :func:`papo_verl.compare.load_runs`.
    """

    name: str                                     # trainer.experiment_name (or the log's stem / dir name)
    source: str                                   # "file" | "tensorboard"
    log_paths: tuple[Path, ...]
    metrics: pd.DataFrame
    config: Optional[dict] = None
    config_path: Optional[Path] = None
    project: Optional[str] = None
    label: Optional[str] = None
    label_source: str = ""
    seed: Optional[int] = None
    seed_source: str = ""
    display: str = ""                             # unique name in plots and tables
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.display:
            self.display = self.name

    @property
    def steps(self) -> list[int]:
        return [int(s) for s in self.metrics.index]

    @property
    def metric_names(self) -> list[str]:
        return list(self.metrics.columns)

    @property
    def training_steps(self) -> list[int]:
        """Steps with any non-validation metric (all steps if the run only logged validation)."""
        train_cols = [c for c in self.metrics.columns if not c.startswith(HELD_OUT_METRIC_PREFIXES)]
        if not train_cols:
            return self.steps
        mask = self.metrics[train_cols].notna().any(axis=1)
        return [int(s) for s in self.metrics.index[mask]]

    @property
    def last_step(self) -> int:
        return max(self.training_steps, default=-1)

    def series(self, metric: str) -> pd.Series:
        """The metric's logged values by step (NaN-free; empty if the run never logged it)."""
        if metric not in self.metrics.columns:
            return pd.Series(dtype=float)
        return self.metrics[metric].dropna()


# ---- values and segments ---------------------------------------------------------------------------

def merge_segments(segments: list[Segment]) -> tuple[Segment, list[str]]:
    """Merge a run's log segments (``X.jsonl``, ``X-2.jsonl``, ... in that order).

    Later segments win: a segment that starts at step ``f`` (a resumed run restarts from its last
    checkpoint, a repeated run from step 0) supersedes every step ``> f`` of the earlier segments,
    which belonged to the abandoned continuation. At step ``f`` itself the values are merged metric by
    metric, the later segment winning (a resumed run logs only its validation at that step, the earlier
    segment the training metrics). Empty segments (a run that stopped before its first step) are
    skipped. Returns the merged ``{step: {metric: value}}`` and notes on what was superseded.
    """
    merged: Segment = {}
    notes: list[str] = []
    for index, segment in enumerate(segments):
        if not segment:
            continue
        first = min(segment)
        dropped = [s for s in merged if s > first]
        if dropped:
            notes.append(f"log segment {index + 1} restarts at step {first}: it supersedes the earlier "
                         f"segment(s)' steps {min(dropped)}..{max(dropped)} ({len(dropped)} step(s))")
            for s in dropped:
                del merged[s]
        for step, values in segment.items():
            merged.setdefault(step, {}).update(values)
    return merged, notes


# ---- verl file logger (*.jsonl) + resolved config (*.config.yaml) ----------------------------------

def _open_text(path: Path):
    try:
        return open(path, encoding="utf-8")
    except OSError as err:
        raise CompareError(f"cannot read {path}: {err.strerror or err}") from err


def read_file_logger_records(path: os.PathLike) -> tuple[list[tuple[int, dict]], list[str]]:
    """The records ``[(step, data)]`` of one verl ``FileLogger`` file (lines ``{"step": s, "data": {...}}``,
    values untouched), and notes. An unparsable last line without its newline (the run was killed while
    writing it) is skipped with a note; any other bad line is a :class:`CompareError` naming file and line.
    """
    path, records, notes = Path(path), [], []
    with _open_text(path) as fh:
        try:
            lines = fh.read().split("\n")
        except (OSError, UnicodeDecodeError) as err:
            raise CompareError(f"cannot read {path}: {err}") from err
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == len(lines):  # no newline after it: a partial write at the end
                notes.append(f"{path.name}: skipped the incomplete last line {lineno} (the run stopped while writing it)")
                continue
            raise CompareError(f"{path} line {lineno}: not valid JSON ({err.msg}); "
                               "is this a verl file-logger metrics log?") from err
        if not isinstance(record, dict) or not _FILE_LOGGER_KEYS <= record.keys() or not isinstance(record["data"], dict):
            raise CompareError(f'{path} line {lineno}: not a verl file-logger record (expected {{"step": <int>, '
                               f'"data": {{<metric>: <value>}}}}, got {line[:80]!r})')
        try:
            step = int(record["step"])
        except (TypeError, ValueError) as err:
            raise CompareError(f"{path} line {lineno}: step {record['step']!r} is not an integer") from err
        records.append((step, record["data"]))
    return records, notes


def read_file_logger_segment(path: os.PathLike) -> tuple[Segment, list[str]]:
    """One verl ``FileLogger`` file as ``{step: {metric: float}}``, and notes: records of one step merged
    (later lines win), ``null`` as NaN, non-numeric values skipped."""
    records, notes = read_file_logger_records(path)
    segment: Segment = {}
    for step, data in records:
        values = segment.setdefault(step, {})
        for key, value in data.items():
            if value is None or isinstance(value, (int, float)):  # bool is an int: true -> 1.0
                values[str(key)] = math.nan if value is None else float(value)
    return segment, notes


def read_metrics_log(path: os.PathLike) -> Segment:
    """``{step: {metric: float}}`` of a verl file-logger JSONL (:func:`read_file_logger_segment` without its notes)."""
    return read_file_logger_segment(path)[0]


def read_config_yaml(path: Path) -> dict:
    """A resolved config written by ``papo_verl.main`` (``OmegaConf.to_yaml(config, resolve=True)``)."""
    with _open_text(path) as fh:
        try:
            config = yaml.safe_load(fh)
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise CompareError(f"cannot parse the resolved config {path}: {' '.join(str(err).split())}") from err
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise CompareError(f"the resolved config {path} is not a YAML mapping (got {type(config).__name__})")
    return config


def _looks_like_file_logger(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            first = fh.readline(1 << 20)
            while first and not first.strip():
                first = fh.readline(1 << 20)
    except OSError:
        return True  # let the reader report it
    try:
        record = json.loads(first)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and set(record) == _FILE_LOGGER_KEYS and isinstance(record["data"], dict)


def _experiment_in(config_path: Path) -> Optional[str]:
    try:
        return _run_name_from_config(read_config_yaml(config_path))[0]
    except CompareError:
        return None


def _file_logger_runs_in_dir(directory: Path, names: Iterable[str], explicit: bool) -> list[RunSource]:
    """Group the ``*.jsonl`` / ``*.config.yaml`` files of one directory into runs with their segments.

    ``S-k.jsonl`` (k >= 2) is a segment of run ``S`` when ``S.jsonl`` or ``S.config.yaml`` exists (that
    is when ``papo_verl.main`` picks the ``-k`` name) and, if both have a resolved config, both configs
    name the same ``trainer.experiment_name``.
    """
    names = set(names)
    stems = {n[: -len(JSONL_SUFFIX)] for n in names if n.endswith(JSONL_SUFFIX)}
    extras = {stem for stem in stems if stem.endswith(EXTRA_SUFFIX) and stem[: -len(EXTRA_SUFFIX)]}
    stems -= extras
    config_stems = {n[: -len(CONFIG_SUFFIX)] for n in names if n.endswith(CONFIG_SUFFIX) and len(n) > len(CONFIG_SUFFIX)}

    def family(stem: str) -> tuple[str, int]:  # (run, segment number)
        match = _SEGMENT_STEM.match(stem)
        if not match or int(match["k"]) < 2 or (match["base"] not in stems and match["base"] not in config_stems):
            return stem, 1
        if stem in config_stems and match["base"] in config_stems:
            a = _experiment_in(directory / (match["base"] + CONFIG_SUFFIX))
            b = _experiment_in(directory / (stem + CONFIG_SUFFIX))
            if a is not None and b is not None and a != b:
                return stem, 1
        return match["base"], int(match["k"])

    families: dict[str, list[tuple[int, str]]] = {}
    for stem in stems:
        base, k = family(stem)
        families.setdefault(base, []).append((k, stem))

    sources = []
    for stem in sorted(config_stems - stems - set(families)):
        match = _SEGMENT_STEM.match(stem)
        if match and match["base"] in families:
            continue  # a segment reserved by papo_verl.main whose log is missing: the run's other segments count
        config = directory / (stem + CONFIG_SUFFIX)
        sources.append(RunSource("file", (directory / (stem + JSONL_SUFFIX),), (config,), error=(
            f"run without a metrics log: {config} has no {stem + JSONL_SUFFIX} beside it (did the run start? "
            "is 'file' in trainer.logger?)")))
    for base in sorted(families):
        members = [stem for _, stem in sorted(families[base])]
        if not explicit and not any(stem in config_stems for stem in members) and \
                not any(_looks_like_file_logger(directory / (stem + JSONL_SUFFIX)) for stem in members):
            continue  # some other jsonl (e.g. rollout dumps), or an empty file we cannot attribute
        extra = base + EXTRA_SUFFIX
        sources.append(RunSource(
            "file",
            tuple(directory / (stem + JSONL_SUFFIX) for stem in members),
            tuple((directory / (stem + CONFIG_SUFFIX)) if stem in config_stems else None for stem in members),
            extras=(directory / (extra + JSONL_SUFFIX),) if extra in extras else (),
        ))
    return sources


# ---- tensorboard (torch.utils.tensorboard.SummaryWriter.add_scalar) --------------------------------

def _tb_sort_key(path: Path) -> tuple:  # events.out.tfevents.<unix time>.<host>...: by time, then name
    try:
        return (int(path.name[len(TB_PREFIX):].split(".")[0]), path.name)
    except ValueError:
        return (0, path.name)


def read_tensorboard_file(path: Path) -> Segment:
    """Scalars of one tensorboard event file through tensorboard's ``EventAccumulator`` (``add_scalar``'s
    simple values, and scalar tensors)."""
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
        from tensorboard.util import tensor_util
    except ImportError as err:  # pragma: no cover - tensorboard comes with verl's torch tooling
        raise CompareError(f"reading {path} needs the 'tensorboard' package (pip install tensorboard)") from err
    if not os.access(path, os.R_OK):
        raise CompareError(f"cannot read {path}: permission denied")
    accumulator = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    try:
        accumulator.Reload()
    except Exception as err:  # the loader raises protobuf/IO errors on damaged files
        raise CompareError(f"cannot read the tensorboard event file {path}: {err}") from err
    tags = accumulator.Tags()
    segment: Segment = {}
    for tag in tags.get(ea.SCALARS, []):
        for event in accumulator.Scalars(tag):
            segment.setdefault(int(event.step), {})[tag] = float(event.value)
    for tag in tags.get(ea.TENSORS, []):
        for event in accumulator.Tensors(tag):
            array = tensor_util.make_ndarray(event.tensor_proto)
            if array.size == 1 and array.dtype.kind in "fiub":
                segment.setdefault(int(event.step), {})[tag] = float(array.reshape(()))
    if not segment and path.stat().st_size > 0 and getattr(accumulator, "file_version", None) is None:
        raise CompareError(f"{path} is not a readable tensorboard event file (no event could be decoded)")
    return segment


# ---- discovery -------------------------------------------------------------------------------------

_WANDB_LOG = re.compile(r"^run-.+\.wandb$")
WANDB_NOT_READ = ("papo-compare does not read wandb's offline logs (wandb has no stable reader for them); log the "
                  "run with verl's file logger too (trainer.logger=[console,file,wandb]): papo_verl.main writes "
                  "<experiment>.jsonl and its resolved config")


def discover(path: Path) -> list[RunSource]:
    """Runs at ``path``: a metrics log, a resolved config, an event file, or any
    directory (searched recursively). Raises :class:`CompareError` when nothing is found."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"no such file or directory: {path}")
    if path.is_file():
        name = path.name
        if name.endswith(CONFIG_SUFFIX):
            jsonl = path.with_name(name[: -len(CONFIG_SUFFIX)] + JSONL_SUFFIX)
            if not jsonl.exists():
                raise CompareError(f"run without a metrics log: {path} has no {jsonl.name} beside it")
            path, name = jsonl, jsonl.name
        if name.endswith(JSONL_SUFFIX):
            for source in _file_logger_runs_in_dir(path.parent, os.listdir(path.parent), explicit=True):
                if any(p.name == name for p in source.segments):
                    return [source]
            raise CompareError(f"{path}: not a verl file-logger metrics log")  # pragma: no cover
        if name.startswith(TB_PREFIX):
            return [RunSource("tensorboard", tuple(sorted(path.parent.glob(TB_PREFIX + "*"), key=_tb_sort_key)))]
        if _WANDB_LOG.match(name):
            raise CompareError(f"{path}: {WANDB_NOT_READ}")
        raise CompareError(f"{path}: not a metrics log papo-compare can read (expected a verl file-logger "
                           f"<experiment>.jsonl, its <experiment>.config.yaml, a tensorboard {TB_PREFIX}* file, "
                           "or a directory holding them)")

    sources: list[RunSource] = []
    wandb_logs: list[Path] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        here = Path(root)
        wandb_logs += [here / f for f in files if _WANDB_LOG.match(f)]
        events = sorted((here / f for f in files if f.startswith(TB_PREFIX)), key=_tb_sort_key)
        if events:
            sources.append(RunSource("tensorboard", tuple(events)))
        sources.extend(_file_logger_runs_in_dir(here, files, explicit=False))
    if not sources and wandb_logs:
        raise CompareError(f"{wandb_logs[0]}: {WANDB_NOT_READ}")
    if not sources:
        raise CompareError(f"no runs found under {path} (looked for verl file-logger <experiment>.jsonl logs, "
                           f"tensorboard {TB_PREFIX}* files)")
    return sources


# ---- reading one run -------------------------------------------------------------------------------

def _run_name_from_config(config: Optional[dict]) -> tuple[Optional[str], Optional[str]]:
    trainer = (config or {}).get("trainer")
    trainer = trainer if isinstance(trainer, dict) else {}
    name, project = trainer.get("experiment_name"), trainer.get("project_name")
    return (str(name) if name is not None else None, str(project) if project is not None else None)


def read_run(source: RunSource) -> Run:
    """Read one discovered run (all its segments); raises :class:`CompareError` if it has no step."""
    if source.error:
        raise CompareError(source.error)
    if source.kind == "file":
        read = [read_file_logger_segment(p) for p in source.segments]
        segments, notes = [segment for segment, _ in read], [note for _, more in read for note in more]
        configs = [(p, read_config_yaml(p)) for p in source.config_paths if p is not None and p.exists()]
        config_path, config = configs[-1] if configs else (None, None)
        differing = config_differences([c for _, c in configs])
        if differing:
            notes.append(f"its segments' resolved configs differ in {', '.join(sorted(differing)[:8])}"
                         f"{' ...' if len(differing) > 8 else ''}; using {config_path.name}")
        default_name, default_project = source.segments[0].name[: -len(JSONL_SUFFIX)], source.segments[0].parent.name
    else:  # tensorboard
        segments, notes = [read_tensorboard_file(p) for p in source.segments], []
        directory = source.segments[0].parent
        inside = sorted(directory.glob("*" + CONFIG_SUFFIX)) + sorted(directory.glob("config.yaml"))
        beside = directory.with_name(directory.name + CONFIG_SUFFIX)
        config_path = inside[0] if inside else (beside if beside.is_file() else None)
        config = read_config_yaml(config_path) if config_path else None
        default_name, default_project = directory.name, directory.parent.name
    name, project = _run_name_from_config(config)
    name, project = name or default_name, project or default_project

    merged, merge_notes = merge_segments(segments)
    notes.extend(merge_notes)
    for path in source.extras:  # metrics computed after the run: added, never replacing a logged value
        extra, extra_notes = read_file_logger_segment(path)
        notes.extend(extra_notes)
        for step, values in extra.items():
            merged[step] = {**values, **merged.get(step, {})}
    metrics = pd.DataFrame.from_dict(merged, orient="index", dtype=float).sort_index()
    metrics.index = metrics.index.astype(int)
    metrics.index.name = "step"
    metrics = metrics.dropna(axis=1, how="all")
    metrics = metrics[sorted(metrics.columns)]
    if metrics.empty:
        raise CompareError(f"run {name}: its metrics log has no logged step ({', '.join(map(str, source.segments))}); "
                           "the run stopped before its first step, or logged no numeric metric")
    return Run(name=name, source=source.kind, log_paths=tuple(source.segments), metrics=metrics,
               config=config, config_path=config_path, project=project, notes=notes)

