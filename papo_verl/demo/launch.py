"""One training run of ``python -m papo_verl.main`` as its own measured process tree.

:func:`run_training` is shared by the CPU demo (:mod:`papo_verl.demo.run`) and the end-to-end tests
(``tests/e2e/fixtures.py``): it starts verl's main in a subprocess (a fresh local Ray cluster; the file
logger's folder set by ``VERL_FILE_LOGGER_ROOT``), samples the memory of its whole process tree
(:class:`papo_verl.demo.proctree.ProcessTreeRun`), removes whatever of the tree survives it, and reports
what the run left in /dev/shm or loose in /tmp (:func:`host_files`) and the metrics it logged.
"""

from __future__ import annotations

import math
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

__all__ = ["METRICS_LOG_MARKER", "TrainingRun", "host_files", "metrics_file_in_log", "run_training"]

# papo_verl.main prints "papo_verl: metrics log <path> (resolved config beside it)" when the file logger is on
METRICS_LOG_MARKER = "papo_verl: metrics log "
# never inherited by a run: a fresh local cluster, and the log file main reserves itself
DROPPED_ENV = ("RAY_ADDRESS", "VERL_FILE_LOGGER_PATH")
LOG_TAIL_CHARS = 6000
# Ray's own message when its local node is not up within a fixed 30 s (ray/_private/node.py): on a loaded
# machine the GCS and raylet start too slowly; nothing of the run has started, so it is tried again
RAY_STARTUP_FAILURE = "The current node timed out during startup"
_GIB = 1024 ** 3


@dataclass
class TrainingRun:
    """One finished run: exit code (-1: timed out), its files, resource figures and training metrics."""

    name: str
    rc: int
    wall_s: float
    log_file: str  # the run's console output
    metrics_file: Optional[str]  # the file logger's JSONL (None without the file logger)
    peak_pss_gib: float = math.nan  # summed over the process tree
    peak_rss_gib: float = math.nan
    largest_at_peak: list = field(default_factory=list)  # [(process name, PSS GiB)] at the PSS peak
    leftovers: list = field(default_factory=list)  # "name (pid N)" of the tree's processes that outlived the run
    left_behind: list = field(default_factory=list)  # host_files() entries that appeared during the run
    log_tail: str = ""  # the last LOG_TAIL_CHARS characters of log_file
    steps: dict = field(default_factory=dict)  # training step -> {metric: float} (records with training/global_step)


def host_files() -> set:
    """Entries of /dev/shm, and what an inference engine could leave loose in /tmp: socket files, vLLM's
    and torch.compile's files (verl's checkpoint lock files and Ray's /tmp/ray are not the rollout's)."""
    shm = {f"/dev/shm/{n}" for n in os.listdir("/dev/shm")} if os.path.isdir("/dev/shm") else set()
    tmp = set()
    for entry in os.scandir("/tmp"):
        try:
            is_socket = stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode)
        except OSError:
            continue
        if is_socket or entry.name.startswith(("vllm", "torchinductor", "rl-colocate-zmq")):
            tmp.add(entry.path)
    return shm | tmp


def metrics_file_in_log(text: str) -> Optional[str]:
    """The metrics log path ``papo_verl.main`` printed in a run's console output, or None."""
    if METRICS_LOG_MARKER not in text:
        return None
    return text[text.index(METRICS_LOG_MARKER) + len(METRICS_LOG_MARKER):].split(" ", 1)[0]


def run_training(overrides: Sequence[str], *, name: str, out: Path, log_root: Path, log_file: Path,
                 timeout_s: float, config_name: str = "papo_trainer_cpu", env: Optional[Mapping[str, Optional[str]]] = None,
                 echo: bool = False, shutdown_grace_s: float = 10.0, ray_startup_retries: int = 2,
                 retry_pause_s: float = 30.0) -> TrainingRun:
    """Run ``python -m papo_verl.main --config-name <config_name> <overrides>`` in ``out`` and measure it.

    ``log_root`` becomes ``VERL_FILE_LOGGER_ROOT`` (the metrics log is ``<log_root>/<project>/<experiment>.jsonl``
    or, if that exists, ``-2``, ``-3`` …); ``env`` adds variables to this process's environment (``None``
    removes one; :data:`DROPPED_ENV` are always removed). The output goes to ``log_file`` (and to stdout
    with ``echo``). A run past ``timeout_s`` is terminated and gets ``rc=-1``. Processes of the tree still alive
    ``shutdown_grace_s`` after the command ended are reported in ``leftovers``, then removed. A run that fails
    because Ray's local node did not start in time (:data:`RAY_STARTUP_FAILURE`, before any training step) is
    started again after ``retry_pause_s``, at most ``ray_startup_retries`` times; the failed attempt's output
    is kept beside ``log_file`` as ``<stem>.ray-startup-<n>.log`` (its metrics log, reserved and empty, is
    removed with its resolved config so that the retry logs under the same name).
    """
    from papo_verl.compare.logs import CONFIG_SUFFIX, read_metrics_log
    from papo_verl.demo.proctree import ProcessTreeRun

    out, log_file = Path(out), Path(log_file)
    cmd = [sys.executable, "-m", "papo_verl.main", "--config-name", config_name, *overrides]
    run_env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    run_env.update(VERL_FILE_LOGGER_ROOT=str(log_root), TOKENIZERS_PARALLELISM="false")
    for key, value in (env or {}).items():
        if value is None:
            run_env.pop(key, None)
        else:
            run_env[key] = value
    for attempt in range(1, ray_startup_retries + 2):
        before = host_files()
        with ProcessTreeRun(cmd, env=run_env, cwd=str(out), log_path=str(log_file), echo=echo,
                            shutdown_grace_s=shutdown_grace_s) as run:
            rc = run.wait(timeout_s)
            wall = time.time() - run.started_at
        left_behind = sorted(host_files() - before)
        text = log_file.read_text(errors="replace")
        metrics_file = metrics_file_in_log(text)
        steps = {}
        if metrics_file and os.path.exists(metrics_file):
            steps = {step: metrics for step, metrics in read_metrics_log(metrics_file).items()
                     if "training/global_step" in metrics}
        if rc == 0 or steps or RAY_STARTUP_FAILURE not in text or attempt > ray_startup_retries:
            break
        kept = log_file.with_name(f"{log_file.stem}.ray-startup-{attempt}.log")
        log_file.rename(kept)
        if metrics_file and os.path.exists(metrics_file) and os.path.getsize(metrics_file) == 0:
            # the attempt reserved its metrics log and logged nothing: the retry takes the same name again
            config_file = Path(metrics_file).with_suffix(CONFIG_SUFFIX)
            os.remove(metrics_file)
            if config_file.exists():
                os.remove(config_file)
        print(f"papo_verl: {name}: Ray's local node did not start in time (an overloaded machine?); its output is in "
              f"{kept}; starting the run again in {retry_pause_s:.0f} s (retry {attempt} of {ray_startup_retries})",
              file=sys.stderr, flush=True)
        time.sleep(retry_pause_s)
    return TrainingRun(name, rc if rc is not None else -1, wall, str(log_file), metrics_file,
                       run.memory.peak_pss / _GIB, run.memory.peak_rss / _GIB,
                       [(process, pss / _GIB) for process, pss in run.memory.top_at_peak],
                       run.survivors, left_behind, text[-LOG_TAIL_CHARS:], steps)  # survivors: recorded before removal
