#!/usr/bin/env python
"""PAPO's per-token vocabulary statistics: the one-pass path versus naive torch and verl's entropy.

For ``[N, V]`` logits (bfloat16 by default, as the actor's LM head produces them) it times, side by
side in one run:

* ``fused``          — :func:`papo_verl.kernels.logit_stats` (``backend=auto``: the one-pass Triton
                       kernel on CUDA, the chunked torch path on CPU): log π_k, H, Σπ², Σπ² log π.
* ``fused_torch``    — the chunked torch path forced on GPU (the fallback without Triton).
* ``naive``          — float32 softmax materialised: ``log_softmax`` → ``exp`` → three reductions.
* ``verl_entropy``   — verl's entropy-only pass, ``verl.utils.torch_functional.entropy_from_logits``
                       (on GPU also ``verl_entropy_compiled``: ``torch.compile(..., dynamic=True)``,
                       verl's default ``use_torch_compile=True``).
* ``extra_pass``     — verl's own separate reduction ``calculate_sum_pi_squared_from_logits`` (Σπ²
                       only): the cheapest extra pass verl has, i.e. a lower bound of "entropy pass
                       + a separate pass for the PAPO statistics".
* ``copy``           — (GPU) ``dst.copy_(src)`` of the same bytes: the measured copy bandwidth.

and the peak memory of each (GPU: ``torch.cuda.max_memory_allocated`` above the inputs; CPU: the
process's peak resident set above the inputs, VmHWM after a reset). Sizes: ``--n`` × ``--v``
(CPU default small; GPU default N ∈ {4k, 16k, 64k} × V ∈ {32k, 152k}). Methods run interleaved,
``--repeats`` times; medians. ``--check`` (default on) compares ``fused`` against a float64
reference on a subset of rows and fails loudly if it disagrees.

CPU runs use 1 thread by default (``--threads``): on an oversubscribed machine torch's OpenMP
barriers stall every parallel op, and the chunked path issues many small ops.

The last lines are ``ratio_<what>: <number>``, one per line, first per size then the aggregate
(worst case over sizes). Speed-ups are "other time / fused time" (higher is better):
``ratio_fused_vs_naive_<dev>``, ``ratio_fused_vs_verl_entropy_<dev>``,
``ratio_fused_vs_verl_entropy_plus_pass_<dev>``; memory ``ratio_peak_mem_naive_vs_fused_<dev>``
(naive / fused); on GPU ``ratio_fused_fraction_of_copy_bw_gpu`` (achieved read bandwidth / copy
bandwidth, target ≥ 0.8) and ``ratio_papo_extra_cost_vs_verl_entropy_gpu`` (fused / verl entropy
− 1: what PAPO adds when its pass replaces verl's entropy pass, target ≤ 0.10).

    python bench/logit_stats.py                                  # CPU, 1 thread, < 2 minutes
    python bench/logit_stats.py --threads 0                      # CPU, torch's default threads
    python bench/logit_stats.py --device cuda                    # GPU, N ∈ {4k,16k,64k} × V ∈ {32k,152k}
    python bench/logit_stats.py --n 4096 --v 152064 --repeats 5
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchinfo import git_commit  # noqa: E402  (bench/ is the script's own folder)

CPU_DEFAULT_N = (256, 512)
GPU_DEFAULT_N = (4096, 16384, 65536)
DEFAULT_V = (32768, 152064)


# ----------------------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------------------
def naive_stats(logits, labels, temperature):
    """Softmax materialised in float32: the straightforward torch implementation."""
    z = logits.float() / temperature
    logp = torch.log_softmax(z, dim=-1)
    pi = logp.exp()
    return (logp.gather(1, labels.unsqueeze(-1)).squeeze(-1), -(pi * logp).sum(-1), (pi * pi).sum(-1),
            (pi * pi * logp).sum(-1))


def verl_scaled(logits, temperature):
    return logits if temperature == 1.0 else logits / temperature  # verl's engine divides first


# ----------------------------------------------------------------------------------------------
# Measurement helpers
# ----------------------------------------------------------------------------------------------
class CpuPeak:
    """Peak resident memory of a call above the resident memory before it (Linux /proc)."""

    def __init__(self):
        self.libc = None
        try:
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: large blocks via mmap, returned on free
        except OSError:
            pass
        self.ok = os.path.exists("/proc/self/clear_refs") and os.access("/proc/self/clear_refs", os.W_OK)

    @staticmethod
    def _status(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def measure(self, fn):
        if not self.ok:
            fn()
            return float("nan")
        gc.collect()
        if self.libc is not None:
            self.libc.malloc_trim(0)
        before = self._status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        fn()
        return max(0, self._status("VmHWM") - before)


def gpu_peak(fn, device):
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def timed(fn, device):
    """``(wall seconds, process CPU seconds)`` of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def is_oom(exc):
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def machine(device):
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text += f"; GPU {props.name} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)"
    try:
        import triton

        text += f"; triton {triton.__version__}"
    except Exception:
        text += "; triton not installed"
    return text


# ----------------------------------------------------------------------------------------------
def make_inputs(n, vocab, args, device):
    dtype = getattr(torch, args.dtype)
    g = torch.Generator(device="cpu").manual_seed(n + vocab)
    logits = (torch.randn(n, vocab, generator=g) * args.logit_scale).to(dtype).to(device)
    labels = torch.randint(0, vocab, (n,), generator=g).to(device)
    return logits, labels


def make_methods(logits, labels, args, device):
    from verl.utils.torch_functional import calculate_sum_pi_squared_from_logits, entropy_from_logits

    from papo_verl.kernels import logit_stats

    temperature = args.temperature
    methods = {
        "fused": lambda: logit_stats(logits, labels, temperature, backend="auto"),
        "naive": lambda: naive_stats(logits, labels, temperature),
        "verl_entropy": lambda: entropy_from_logits(verl_scaled(logits, temperature)),
        "extra_pass": lambda: calculate_sum_pi_squared_from_logits(verl_scaled(logits, temperature)),
    }
    if device.type == "cuda":
        methods["fused_torch"] = lambda: logit_stats(logits, labels, temperature, backend="torch")
        compiled = torch.compile(entropy_from_logits, dynamic=True)
        methods["verl_entropy_compiled"] = lambda: compiled(verl_scaled(logits, temperature))
        copy_dst = torch.empty_like(logits)
        methods["copy"] = lambda: copy_dst.copy_(logits)
    return methods


def time_size(n, vocab, args, device):
    """Median wall time of every method (interleaved repeats), and the float64 check of ``fused``."""
    from papo_verl.kernels import logit_stats

    logits, labels = make_inputs(n, vocab, args, device)
    methods = make_methods(logits, labels, args, device)
    result = {"n": n, "v": vocab, "time": {}, "peak": {}, "error": {},
              "nbytes": logits.numel() * logits.element_size()}
    alive = {}
    for name, fn in methods.items():  # warm-up (Triton autotuning, torch.compile) and OOM screening
        try:
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            alive[name] = fn
        except Exception as exc:  # noqa: BLE001 - reported in the table
            if not is_oom(exc) and name != "verl_entropy_compiled":
                raise
            result["error"][name] = "OOM" if is_oom(exc) else f"{type(exc).__name__}"
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    times = {name: [] for name in alive}
    for _ in range(args.repeats):
        for name, fn in alive.items():
            times[name].append(timed(fn, device))
    result["time"] = {name: statistics.median(w for w, _ in ts) for name, ts in times.items()}
    result["cpu"] = {name: statistics.median(c for _, c in ts) for name, ts in times.items()}

    if args.check:
        rows = torch.arange(0, n, max(1, n // 64), device=device)
        got = logit_stats(logits[rows], labels[rows], args.temperature, backend="auto")
        z = logits[rows].double() / args.temperature
        logp = torch.log_softmax(z, -1)
        pi = logp.exp()
        ref = (logp.gather(1, labels[rows].unsqueeze(-1)).squeeze(-1), -(pi * logp).sum(-1), (pi * pi).sum(-1),
               (pi * pi * logp).sum(-1))
        worst = 0.0
        for a, b in zip(got, ref):
            worst = max(worst, float(((a.double() - b).abs() / (1e-5 + 1e-4 * b.abs())).max()))
        result["check"] = worst
        if worst > 1.0:
            raise AssertionError(f"fused statistics disagree with the float64 reference at N={n}, V={vocab}: "
                                 f"{worst:.2f} x tolerance")
    return result


def peak_size(result, args, device, cpu_peak):
    """Peak memory of every method that ran (a separate phase: the CPU measurement tunes malloc)."""
    logits, labels = make_inputs(result["n"], result["v"], args, device)
    for name, fn in make_methods(logits, labels, args, device).items():
        if name == "copy" or name not in result["time"]:
            continue
        result["peak"][name] = gpu_peak(fn, device) if device.type == "cuda" else cpu_peak.measure(fn)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--n", type=int, nargs="+", default=None, help="tokens per batch (several allowed)")
    parser.add_argument("--v", type=int, nargs="+", default=list(DEFAULT_V), help="vocabulary sizes")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--logit-scale", type=float, default=3.0, help="std of the random logits")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (median); CPU 3, GPU 10")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: reproducible on shared machines, and what Ray gives "
                             "CPU workers; 0 = torch's default)")
    parser.add_argument("--no-check", dest="check", action="store_false")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore", message=".*engine is not available.*")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    tag = "gpu" if device.type == "cuda" else "cpu"
    ns = args.n or (GPU_DEFAULT_N if device.type == "cuda" else CPU_DEFAULT_N)
    if args.repeats is None:
        args.repeats = 10 if device.type == "cuda" else 3

    import logging

    logging.basicConfig(level=logging.WARNING, format="# %(message)s")
    print(f"# bench/logit_stats.py  {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}  commit {git_commit()}")
    print(f"# machine: {machine(device)}; load average {os.getloadavg()[0]:.1f}")
    print(f"# logits {args.dtype}, temperature {args.temperature}, N x V in {list(ns)} x {list(args.v)}, "
          f"{args.repeats} interleaved repeats (median)")
    results = [time_size(n, vocab, args, device) for vocab in args.v for n in ns]
    cpu_peak = CpuPeak() if device.type == "cpu" else None  # after the timings: it changes malloc's policy
    for res in results:
        peak_size(res, args, device, cpu_peak)
    for res in results:
        n, vocab, nbytes = res["n"], res["v"], res["nbytes"]
        t, p = res["time"], res["peak"]
        print(f"\n## N={n} V={vocab} ({nbytes / 2**30:.2f} GiB of logits)"
              + (f"  check: max error {res['check']:.3f} x tolerance" if "check" in res else ""))
        print(f"{'method':<24}{'median ms':>12}{'CPU ms':>10}{'peak MiB':>12}{'GB/s read':>12}")
        for name in list(t) + list(res["error"]):
            if name in res["error"]:
                print(f"{name:<24}{res['error'][name]:>12}")
                continue
            read = nbytes / t[name] / 1e9 * (2 if name == "copy" else 1)
            peak = p.get(name, float("nan")) / 2**20
            print(f"{name:<24}{t[name] * 1e3:>12.2f}{res['cpu'][name] * 1e3:>10.1f}{peak:>12.1f}{read:>12.1f}")

    print()
    aggregate = {}

    def emit(name, value, worst):
        if value is None or not math.isfinite(value):
            return
        print(f"{name}_N{res['n']}_V{res['v']}: {value:.3f}")
        aggregate.setdefault(name, []).append((value, worst))

    def ratio(table, num, den="fused"):
        """``sum(table[num]) / table[den]``; None when a method did not run (out of memory)."""
        names = num if isinstance(num, tuple) else (num,)
        if den not in table or any(k not in table for k in names):
            return None
        return sum(table[k] for k in names) / table[den]

    for res in results:
        t, p = res["time"], res["peak"]
        fused = t["fused"]
        emit(f"ratio_fused_vs_naive_{tag}", ratio(t, "naive"), min)
        if tag == "cpu":
            emit("ratio_fused_vs_naive_cpu_time", ratio(res["cpu"], "naive"), min)
            emit("ratio_fused_vs_verl_entropy_plus_pass_cpu_time",
                 ratio(res["cpu"], ("verl_entropy", "extra_pass")), min)
        emit(f"ratio_fused_vs_verl_entropy_{tag}", ratio(t, "verl_entropy"), min)
        emit(f"ratio_fused_vs_verl_entropy_plus_pass_{tag}", ratio(t, ("verl_entropy", "extra_pass")), min)
        if "naive" in p and p.get("fused", 0) > 0:
            emit(f"ratio_peak_mem_naive_vs_fused_{tag}", p["naive"] / p["fused"], min)
        if tag == "gpu":
            if "copy" in t:
                copy_bw = 2 * res["nbytes"] / t["copy"]
                emit("ratio_fused_fraction_of_copy_bw_gpu", (res["nbytes"] / fused) / copy_bw, min)
            entropy_ref = min(t.get("verl_entropy", math.inf), t.get("verl_entropy_compiled", math.inf))
            emit("ratio_papo_extra_cost_vs_verl_entropy_gpu",
                 fused / entropy_ref - 1.0 if math.isfinite(entropy_ref) else None, max)
            if "fused_torch" in t:
                emit("ratio_fused_vs_fused_torch_gpu", t["fused_torch"] / fused, min)
    for name, values in aggregate.items():
        pick = values[0][1]
        print(f"{name}: {pick(v for v, _ in values):.3f}")


if __name__ == "__main__":
    main()
