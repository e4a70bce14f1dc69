"""papo_verl.demo.proctree.ProcessTreeRun's memory sampling on a real process tree: RSS every sample,
PSS (expensive to read) every ``pss_every`` samples and at every new RSS high, so the PSS peak is not missed."""

import sys

from papo_verl.demo.proctree import ProcessTreeRun

# a child that grows its memory in 3 steps of 64 MiB, then holds it
GROWING_TREE = r"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", '''
import time
blocks = []
for _ in range(3):
    blocks.append(bytearray(64 << 20))
    time.sleep(0.3)
time.sleep(3.0)
'''])
child.wait()
"""


def test_pss_is_read_at_new_rss_highs_and_every_pss_every_samples(tmp_path):
    with ProcessTreeRun([sys.executable, "-c", GROWING_TREE], env={}, cwd=str(tmp_path),
                        log_path=str(tmp_path / "tree.log"), interval_s=0.05, pss_every=1000) as run:
        assert run.wait(60) == 0
    m = run.memory
    assert m.peak_processes == 2 and m.samples > 20
    assert 3 <= m.pss_samples < m.samples / 2  # the first sample, then only new RSS highs (pss_every is never reached)
    # the held 192 MiB are counted, in both measures (PSS: the child's private pages count in full)
    assert m.peak_rss >= 192 << 20 and m.peak_pss >= 192 << 20
    (_, biggest), *_ = m.top_at_peak  # the processes at the PSS peak, largest first: the growing child
    assert biggest >= 192 << 20


def test_every_sample_reads_pss_when_pss_every_is_1(tmp_path):
    with ProcessTreeRun([sys.executable, "-c", "import time; time.sleep(0.5)"], env={}, cwd=str(tmp_path),
                        log_path=str(tmp_path / "tree.log"), interval_s=0.05, pss_every=1) as run:
        assert run.wait(60) == 0
    assert run.memory.pss_samples == run.memory.samples > 3 and run.memory.peak_pss > 0
