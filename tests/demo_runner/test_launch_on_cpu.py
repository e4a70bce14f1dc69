"""papo_verl.demo.launch.run_training (the demo's and the e2e tests' launcher) around a stand-in for verl's main:
the environment it passes, the metrics log it finds, the training steps it reads, the files a run left."""

import math
import os
import sys
import uuid

from papo_verl.demo.launch import RAY_STARTUP_FAILURE, metrics_file_in_log, run_training

FAKE_MAIN = r"""#!/bin/sh
echo "ARGS $*"
env | grep -E '^(RAY_ADDRESS|VERL_FILE_LOGGER_PATH|VERL_FILE_LOGGER_ROOT|TOKENIZERS_PARALLELISM|PROBE_[A-Z]+)=' | sort
log="$VERL_FILE_LOGGER_ROOT/proj/exp.jsonl"
mkdir -p "$VERL_FILE_LOGGER_ROOT/proj"
printf '%s\n' '{"step": 0, "data": {"val-core/acc": 0.5}}' \
    '{"step": 1, "data": {"training/global_step": 1, "critic/score/mean": 0.25}}' \
    '{"step": 2, "data": {"training/global_step": 2, "critic/score/mean": null}}' > "$log"
echo "papo_verl: metrics log $log (resolved config beside it)"
touch "/dev/shm/$PROBE_SHM"
exit 3
"""


def test_run_training_passes_the_environment_and_reads_the_run(tmp_path, monkeypatch):
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_MAIN)
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    monkeypatch.setenv("RAY_ADDRESS", "someone-elses-cluster:6379")
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", "/elsewhere/x.jsonl")
    monkeypatch.setenv("PROBE_INHERITED", "kept")
    monkeypatch.setenv("PROBE_REMOVED", "gone")
    shm = f"papo-launch-test-{uuid.uuid4().hex}"
    out = tmp_path / "out"
    out.mkdir()
    try:
        run = run_training(["a=1", "+b=two"], name="exp", out=out, log_root=out / "logs", log_file=out / "exp.log",
                           timeout_s=60, config_name="cfg",
                           env={"PROBE_SHM": shm, "PROBE_REMOVED": None, "PROBE_ADDED": "yes"})
    finally:
        if os.path.exists(f"/dev/shm/{shm}"):
            os.remove(f"/dev/shm/{shm}")
    log = (out / "exp.log").read_text()
    assert run.name == "exp" and run.rc == 3 and run.log_file == str(out / "exp.log") and run.log_tail == log
    assert "ARGS -m papo_verl.main --config-name cfg a=1 +b=two\n" in log
    env_lines = [line for line in log.splitlines() if "=" in line and not line.startswith(("ARGS", "papo_verl"))]
    assert env_lines == ["PROBE_ADDED=yes", "PROBE_INHERITED=kept", f"PROBE_SHM={shm}", "TOKENIZERS_PARALLELISM=false",
                         f"VERL_FILE_LOGGER_ROOT={out / 'logs'}"]
    assert run.metrics_file == str(out / "logs" / "proj" / "exp.jsonl")
    assert list(run.steps) == [1, 2] and run.steps[1] == {"training/global_step": 1.0, "critic/score/mean": 0.25}
    assert run.steps[2]["training/global_step"] == 2.0 and math.isnan(run.steps[2]["critic/score/mean"])  # null
    assert f"/dev/shm/{shm}" in run.left_behind and run.leftovers == []
    assert run.peak_rss_gib > 0 and run.wall_s > 0


def test_run_training_stops_a_run_past_its_timeout(tmp_path, monkeypatch):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho started\nexec sleep 120\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    run = run_training([], name="slow", out=tmp_path, log_root=tmp_path, log_file=tmp_path / "slow.log", timeout_s=1)
    assert run.rc == -1 and run.metrics_file is None and run.steps == {} and run.leftovers == []
    assert run.log_tail == "started\n" and run.wall_s < 60


def test_a_process_that_outlives_the_run_is_reported_then_removed(tmp_path, monkeypatch):
    import psutil

    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\nsleep 300 &\necho $! > \"$PROBE_PID_FILE\"\nsleep 2\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    pid_file = tmp_path / "orphan.pid"
    run = run_training([], name="orphan", out=tmp_path, log_root=tmp_path, log_file=tmp_path / "orphan.log",
                       timeout_s=60, env={"PROBE_PID_FILE": str(pid_file)}, shutdown_grace_s=1.0)
    pid = int(pid_file.read_text())
    assert run.rc == 0 and run.leftovers == [f"sleep (pid {pid})"]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_metrics_file_in_log():
    assert metrics_file_in_log("x\npapo_verl: metrics log /a/b/c.jsonl (resolved config beside it)\n") == "/a/b/c.jsonl"
    assert metrics_file_in_log("no file logger\n") is None


FLAKY_RAY_START = r"""#!/bin/sh
n=$(cat "$PROBE_COUNT" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$PROBE_COUNT"
mkdir -p "$VERL_FILE_LOGGER_ROOT/proj"
log="$VERL_FILE_LOGGER_ROOT/proj/exp.jsonl"
[ -e "$log" ] && log="$VERL_FILE_LOGGER_ROOT/proj/exp-2.jsonl"   # papo_verl.main's reservation
: > "$log"; echo "resolved" > "${log%.jsonl}.config.yaml"
echo "papo_verl: metrics log $log (resolved config beside it)"
if [ "$n" -le "$PROBE_FAILURES" ]; then echo "Exception: $PROBE_MESSAGE"; exit 1; fi
printf '%s\n' '{"step": 1, "data": {"training/global_step": 1}}' > "$log"
exit 0
"""


def _flaky(tmp_path, monkeypatch, failures, message=RAY_STARTUP_FAILURE, retries=2):
    fake = tmp_path / "fake-python"
    fake.write_text(FLAKY_RAY_START)
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    out = tmp_path / "out"
    out.mkdir()
    run = run_training([], name="exp", out=out, log_root=out / "logs", log_file=out / "exp.log", timeout_s=60,
                       env={"PROBE_COUNT": str(tmp_path / "count"), "PROBE_FAILURES": str(failures),
                            "PROBE_MESSAGE": message}, ray_startup_retries=retries, retry_pause_s=0.0)
    return run, out, int((tmp_path / "count").read_text())


def test_a_run_whose_ray_node_did_not_start_is_started_again(tmp_path, monkeypatch, capsys):
    run, out, attempts = _flaky(tmp_path, monkeypatch, failures=2)
    assert attempts == 3 and run.rc == 0 and list(run.steps) == [1]
    # the retry logged under the run's own name; the failed attempts' output is kept, their empty logs are not
    assert run.metrics_file == str(out / "logs" / "proj" / "exp.jsonl")
    assert sorted(p.name for p in (out / "logs" / "proj").iterdir()) == ["exp.config.yaml", "exp.jsonl"]
    assert sorted(p.name for p in out.glob("exp*.log")) == ["exp.log", "exp.ray-startup-1.log", "exp.ray-startup-2.log"]
    assert RAY_STARTUP_FAILURE in (out / "exp.ray-startup-1.log").read_text()
    assert "retry 2 of 2" in capsys.readouterr().err


def test_retries_are_bounded_and_other_failures_are_not_retried(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    run, _, attempts = _flaky(tmp_path / "a", monkeypatch, failures=5)
    assert attempts == 3 and run.rc == 1 and RAY_STARTUP_FAILURE in run.log_tail
    (tmp_path / "b").mkdir()
    run, out, attempts = _flaky(tmp_path / "b", monkeypatch, failures=1, message="CUDA error: no device")
    assert attempts == 1 and run.rc == 1 and not list(out.glob("*.ray-startup-*.log"))
