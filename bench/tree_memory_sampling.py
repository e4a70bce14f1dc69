"""What the demo launcher's memory sampling costs: reading every process's PSS (``/proc/<pid>/smaps_rollup``:
the kernel walks the page tables) vs its RSS (``/proc/<pid>/statm``), per sample of a process tree.

``papo_verl.demo.proctree.ProcessTreeRun`` samples the training run's process tree (~23 processes: Ray, verl's
workers, the vLLM engine, each with torch loaded) once a second. On a 2-core machine the launcher's CPU is
taken from the run. This script starts ``--processes`` Python processes that import torch (the mappings that
make PSS expensive) and touch ``--mib`` MiB each (the run's processes hold 0.4–1 GiB), reads the tree both ways, interleaved, and prints process CPU time per sample and per
second at 1 Hz — with PSS at every sample (before) and at every ``--pss-every``-th (now; plus each new RSS high):

    python bench/tree_memory_sampling.py [--processes 12] [--mib 256] [--samples 20] [--pss-every 10]
    python bench/tree_memory_sampling.py --pid <pid of a running `python -m papo_verl.demo`>   # its live tree
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=12)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--pss-every", type=int, default=10)
    parser.add_argument("--pid", type=int, help="sample this process and its descendants instead")
    args = parser.parse_args()
    if args.pid:
        root = psutil.Process(args.pid)
        tree = [root] + root.children(recursive=True)
        per = measure(tree, args.samples)
        report(per, args, f"the live tree of pid {args.pid} ({root.name()}): {len(tree)} processes")
        return
    ready = (f"import torch, sys, time; held = torch.ones({args.mib} << 18); sys.stdout.write('ready\\n'); "
             "sys.stdout.flush(); time.sleep(600)")
    procs = [subprocess.Popen([sys.executable, "-c", ready], stdout=subprocess.PIPE) for _ in range(args.processes)]
    try:
        for p in procs:
            assert p.stdout.readline() == b"ready\n"
        per = measure([psutil.Process(p.pid) for p in procs], args.samples)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    report(per, args, f"{args.processes} processes with torch imported and {args.mib} MiB touched")


def measure(tree: list, samples: int) -> dict[str, float]:
    """Process CPU time (ms) per sample of ``tree``: every PSS, every RSS, interleaved."""
    cpu = {"pss": 0.0, "rss": 0.0}
    for _ in range(samples):
        for name, read in (("pss", lambda q: q.memory_full_info().pss), ("rss", lambda q: q.memory_info().rss)):
            start = time.process_time()
            total = sum(read(q) for q in tree)
            cpu[name] += time.process_time() - start
            assert total > 0
    return {k: v / samples * 1e3 for k, v in cpu.items()}


def report(per: dict[str, float], args, what: str) -> None:
    from benchinfo import git_commit

    print(f"commit: {git_commit()}; {what}; {args.samples} samples each way")
    for name in ("pss", "rss"):
        print(f"{name}: {per[name]:.3f} ms CPU per sample of the tree")
    before = per["pss"] + per["rss"]
    now = per["rss"] + per["pss"] / args.pss_every
    print(f"at 1 Hz: PSS every sample {before / 10:.2f} % of a core; PSS every {args.pss_every}th {now / 10:.2f} %")
    print(f"ratio_pss_every_sample_vs_every_{args.pss_every}th_sampler_cpu_time: {before / now:.1f}")


if __name__ == "__main__":
    main()
