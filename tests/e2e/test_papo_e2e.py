"""End to end: PAPO with verl's real v1 trainer on CPU (trainer mode, engine statistics, loss hook,
checkpointed tracker, resume).

Asserted on a 3-step run (2 PPO epochs per step, checkpoint at step 2) and its resumption:
* exit code 0, no surviving process, rollout/trainer log-probs equal (fp32);
* every papo/* and actor/papo/* metric of the glossary is logged, finite and in range at every step;
* identities between driver and workers: the weights the workers received are the driver's, and
  the shares of tokens per branch seen by the loss equal those labelled on the driver;
* global_step_2/papo_state.json holds the tracker after 2 steps; the resumed run starts at step 3
  with the restored tracker (no new warm-up, the same H_ref); at step 3 both runs' phase weights are
  exactly the checkpointed tracker's response to the entropy each observed (the responses are fresh
  samples: the rollout's sampling state is not checkpointed), and it logs to a new file without
  touching the first run's log.
"""

import json
import math
from pathlib import Path

import pytest
import yaml

from papo_verl import EntropyTracker, PapoConfig
from papo_verl.compare.logs import read_file_logger_records
from papo_verl.algorithm.metrics import METRICS_GLOSSARY
from papo_verl.integration.trainer import PAPO_STATE_VERSION

pytestmark = pytest.mark.slow

# metrics logged from the first step on (validate_every=1; dH_corr_* need 3 validation steps, entropy_ref
# the end of warm-up, entropy_target and target_integral the target controller)
EVERY_STEP = [k for k in METRICS_GLOSSARY if not k.startswith("papo/val/dH_corr")
              and k not in ("papo/entropy_target", "papo/target_integral", "papo/entropy_ref")]


def test_papo_on_cpu_end_to_end(papo_run):
    run = papo_run
    assert run.rc == 0, f"exit code {run.rc} after {run.wall_s:.0f} s; log tail:\n{run.log_tail}"
    assert not run.leftovers, f"processes of the run survived it: {run.leftovers}"
    assert not run.left_behind, f"the run left files behind: {run.left_behind}"
    # TransferQueue's thread count (TQ_NUM_THREADS of the CPU config) reached every actor: no per-call warning
    assert "should not exceed total physical CPU cores" not in Path(run.log_file).read_text(errors="replace")
    assert sorted(run.steps) == [1, 2, 3]
    for step, m in run.steps.items():
        missing = [k for k in EVERY_STEP if k not in m]
        assert not missing, (step, missing)
        for k, v in m.items():
            if k.startswith(("papo/", "actor/papo/")):
                assert math.isfinite(v), (step, k, v)
        assert m["training/rollout_probs_diff_max"] < 1e-5
        # driver → workers: the broadcast weights arrived
        assert m["actor/papo/expand_weight"] == pytest.approx(m["papo/expand_weight"], rel=1e-9)
        assert m["actor/papo/contract_weight"] == pytest.approx(m["papo/contract_weight"], rel=1e-9)
        # the loss sees the driver's labels: same branch token shares
        assert m["actor/papo/token_share_expand"] == pytest.approx(m["papo/token_share_expand"], rel=1e-6)
        assert m["actor/papo/token_share_contract"] == pytest.approx(m["papo/token_share_contract"], rel=1e-6)
        for k in ("actor/papo/pg_mass_share_expand", "actor/papo/clip_frac_expand", "actor/papo/polarity_flip_share",
                  "papo/adv_mass_share_expand_reweighted", "papo/correction_flip_share"):
            assert 0.0 <= m[k] <= 1.0, (step, k, m[k])
        assert m["papo/tracker_warmup"] == (1.0 if step <= 2 else 0.0)
        assert m["papo/tracker_rejected"] == 0.0 and m["papo/entropy_stderr_measured"] == 1.0
        assert 0 < m["papo/entropy_stderr"] < m["papo/entropy"]
        # the validation's gradient pass sees the same batch entropy as the θ_old pass
        assert m["papo/val/entropy_before"] == pytest.approx(m["papo/entropy"], rel=1e-4)
        for k in ("papo/val/sign_agreement", "papo/val/sign_agreement_sampled_only"):
            assert 0.0 <= m[k] <= 1.0, (step, k, m[k])
    assert "papo/val/dH_corr_pearson" in run.steps[3] and run.steps[3]["papo/val/dH_corr_window"] == 3
    assert "papo/entropy_ref" not in run.steps[1] and "papo/entropy_ref" in run.steps[2]
    # second-epoch updates are off-policy: the polarity of some token changes under the new policy
    assert max(run.steps[s]["actor/papo/polarity_flip_share"] for s in run.steps) > 0

    state = json.loads((run.checkpoint_dir / "global_step_2" / "papo_state.json").read_text())
    assert state["version"] == PAPO_STATE_VERSION and state["tracker"]["steps"] == 2
    assert state["tracker"]["reference"] == pytest.approx(run.steps[2]["papo/entropy_ref"], rel=1e-12)
    print(f"\nPAPO CPU e2e: wall {run.wall_s:.1f} s; peak PSS {run.peak_pss_gib:.2f} GiB, "
          f"peak RSS {run.peak_rss_gib:.2f} GiB")


def test_papo_resumes_with_its_tracker(papo_run, papo_resumed_run):
    first, resumed = papo_run, papo_resumed_run
    assert resumed.rc == 0, f"resumed run failed; log tail:\n{resumed.log_tail}"
    assert not resumed.leftovers
    assert sorted(resumed.steps) == [3, 4, 5]
    # nothing already written is overwritten: the first run's metrics log is intact, the resumed run has its own
    assert resumed.metrics_file != first.metrics_file and resumed.metrics_file.endswith("papo-2.jsonl")
    first_rows, _ = read_file_logger_records(first.metrics_file)
    assert [step for step, data in first_rows if "training/global_step" in data] == [1, 2, 3]
    m3 = resumed.steps[3]
    assert m3["papo/tracker_warmup"] == 0.0  # the tracker was restored: no new warm-up
    assert m3["papo/entropy_ref"] == pytest.approx(first.steps[2]["papo/entropy_ref"], rel=1e-12)
    assert m3["papo/val/dH_corr_window"] == 3  # the validation history (steps 1, 2) was restored as well
    # Step 3 continues from the same checkpoint (weights, dataloader, tracker) in both runs. The rollout's
    # sampling state is not checkpointed (verl keeps none for vLLM either), so step 3's responses are
    # fresh samples and its entropy is close, not equal. What must be exact: the phase weights are the
    # checkpointed tracker's response to the entropy each run observed.
    assert m3["papo/entropy"] == pytest.approx(first.steps[3]["papo/entropy"], rel=1e-2)
    config = yaml.safe_load(Path(first.metrics_file).with_suffix(".config.yaml").read_text())
    papo_config = PapoConfig.from_mapping(config["algorithm"]["papo"])
    state = json.loads((first.checkpoint_dir / "global_step_2" / "papo_state.json").read_text())
    for run in (first, resumed):
        tracker = EntropyTracker(papo_config)
        tracker.load_state_dict(state["tracker"])
        weights = tracker.update(run.steps[3]["papo/entropy"], run.steps[3]["papo/entropy_stderr"])
        logged = run.steps[3]
        assert weights.tilt == pytest.approx(logged["papo/tilt"], rel=1e-12, abs=1e-15)
        assert weights.expand == pytest.approx(logged["papo/expand_weight_raw"], rel=1e-12)
        assert weights.contract == pytest.approx(logged["papo/contract_weight_raw"], rel=1e-12)
        assert tracker.metrics()["papo/entropy_level"] == pytest.approx(logged["papo/entropy_level"], rel=1e-12)
