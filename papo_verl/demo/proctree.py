"""Run a command as its own process tree: sample its memory, and leave nothing running afterwards.

The end-to-end test starts ``python -m papo_verl.main``, which starts a local Ray cluster (gcs,
raylet, ~10 worker processes) as its descendants. :class:`ProcessTreeRun` samples the tree every
``interval_s`` (summed RSS, process count) and its summed PSS every ``pss_every`` samples and whenever
the summed RSS reaches a new high (reading PSS walks every page table: ~170 ms of CPU for a protocol
run's 23 processes, 17 % of a core at 1 Hz, taken from the run on a 2-core machine; reading RSS costs
~0.5 ms; ``bench/tree_memory_sampling.py``). Whatever happens (success, failure, timeout), it
terminates every process of the tree it has seen that is still alive — identified by
(pid, create_time), so a recycled pid is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import psutil

__all__ = ["ProcessTreeRun", "TreeMemory"]


@dataclass
class TreeMemory:
    """Peaks over the samples: summed PSS and RSS (bytes) and the largest number of processes."""

    peak_pss: int = 0
    peak_rss: int = 0
    peak_processes: int = 0
    samples: int = 0
    pss_samples: int = 0  # the samples that also read PSS (every pss_every-th, and each new RSS high)
    top_at_peak: list = field(default_factory=list)  # [(name, pss_bytes)] of the biggest processes at the PSS peak


class ProcessTreeRun:
    """``with ProcessTreeRun(cmd, env=..., cwd=..., log_path=...) as run: rc = run.wait(timeout_s)``.

    The command's output goes to ``log_path``; with ``echo=True`` it is also copied, as it comes, to
    ``sys.stdout`` (the CPU demo shows verl's progress live).
    """

    def __init__(self, cmd: list[str], env: dict, cwd: str, log_path: str, interval_s: float = 1.0,
                 echo: bool = False, shutdown_grace_s: float = 10.0, pss_every: int = 10):
        self.cmd, self.env, self.cwd, self.log_path, self.interval_s = cmd, env, cwd, log_path, interval_s
        self.pss_every = pss_every
        self.echo, self.shutdown_grace_s = echo, shutdown_grace_s
        # "name (pid N)" of the tree's processes still alive shutdown_grace_s after the command ended, recorded
        # by __exit__ before it removes them (what a run would have left behind on its own)
        self.survivors: list[str] = []
        self._reader: Optional[threading.Thread] = None
        self.memory = TreeMemory()
        self.seen: dict[int, float] = {}  # pid -> create_time
        self.proc: Optional[subprocess.Popen] = None
        self.started_at = 0.0
        self._stop = threading.Event()
        self._sampler: Optional[threading.Thread] = None

    def __enter__(self) -> "ProcessTreeRun":
        self._log = open(self.log_path, "wb")
        self.started_at = time.time()
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd,
                                     stdout=subprocess.PIPE if self.echo else self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if self.echo:
            self._reader = threading.Thread(target=self._copy_output, daemon=True)
            self._reader.start()
        self._root = psutil.Process(self.proc.pid)
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True)
        self._sampler.start()
        return self

    def _copy_output(self) -> None:
        out = getattr(sys.stdout, "buffer", None)
        for line in iter(self.proc.stdout.readline, b""):
            self._log.write(line)
            if out is not None:
                out.write(line)
                out.flush()
            else:
                sys.stdout.write(line.decode(errors="replace"))

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        try:
            procs = [self._root] + self._root.children(recursive=True)
        except psutil.NoSuchProcess:
            procs = []
        alive, rss = [], 0
        for p in procs:
            try:
                self.seen.setdefault(p.pid, p.create_time())
                rss += p.memory_info().rss
                alive.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        m = self.memory
        full = m.samples % self.pss_every == 0 or rss > m.peak_rss
        m.samples += 1
        m.peak_rss = max(m.peak_rss, rss)
        m.peak_processes = max(m.peak_processes, len(procs))
        if not full:
            return
        m.pss_samples += 1
        pss, sizes = 0, []
        for p in alive:
            try:
                info = p.memory_full_info()
                pss += info.pss
                sizes.append((p.name(), info.pss))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if pss > m.peak_pss:
            m.peak_pss = pss
            m.top_at_peak = sorted(sizes, key=lambda s: -s[1])[:8]

    def wait(self, timeout_s: float) -> Optional[int]:
        """The exit code, or None if the command ran past ``timeout_s`` (it is then killed by __exit__)."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def leftovers(self) -> list[psutil.Process]:
        """Processes of the tree still alive (same pid and create_time as when seen)."""
        alive = []
        for pid, created in self.seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                continue
        return alive

    def terminate_all(self, grace_s: float = 15.0) -> int:
        """SIGTERM then SIGKILL every surviving process of the tree; returns how many were signalled."""
        victims = self.leftovers()
        for p in victims:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(victims, timeout=grace_s)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        return len(victims)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=10)
        if self.proc.poll() is None:
            self.sample()  # record the current descendants before they are re-parented
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the driver first: Ray shuts its cluster down on SIGTERM
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        # give a normally exiting driver's Ray shutdown a moment, record what outlived it, then remove it
        deadline = time.time() + self.shutdown_grace_s
        while self.leftovers() and time.time() < deadline:
            time.sleep(0.5)
        for p in self.leftovers():
            try:
                self.survivors.append(f"{p.name()} (pid {p.pid})")
            except psutil.NoSuchProcess:
                continue
        self.terminate_all()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
        self._log.close()
