"""Long jobs: exact resume, checkpoints that survive kills, SIGTERM / Ctrl-C, NaN."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng

from conftest import TRAIN_NET, da_cfg, run_train_net
from mic_det.engine import DomainAdaptiveTrainer

ITERS = ["SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_weights(a, b):
    for part in ("model", "teacher"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"


def _resume_from_iteration_2(full, resumed, config, opts, env):
    """train_net.py --resume in a new folder holding only ``full``'s iteration-2 checkpoint."""
    resumed.mkdir()
    shutil.copy(full / "model_0000002.pth", resumed / "model_0000002.pth")
    (resumed / "last_checkpoint").write_text("model_0000002.pth")
    return run_train_net(["--config", config, "--resume", *opts, "OUTPUT_DIR", str(resumed)], env)


def test_resume_is_bit_exact(tool_env, tiny_mic_config, tmp_path):
    """Stop at iteration 3 of 6 and --resume: same student and teacher as without stop.
    One data worker, so the stream positions of both loaders are exercised too."""
    opts = ITERS + ["DATALOADER.NUM_WORKERS", "1", "MIC.COLOR_JITTER_PROB", "0.5"]
    full = tmp_path / "full"
    p = run_train_net(["--config", tiny_mic_config, *opts, "OUTPUT_DIR", str(full)], tool_env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (full / "model_0000002.pth").exists()

    resumed = tmp_path / "resumed"
    p = _resume_from_iteration_2(full, resumed, tiny_mic_config, opts, tool_env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Loading trainer from" in p.stdout + p.stderr or "model_0000002.pth" in p.stdout + p.stderr
    a, b = load(full / "model_final.pth"), load(resumed / "model_final.pth")
    assert a["iteration"] == b["iteration"] == 5
    assert_same_weights(a, b)
    # and the run did move: the final student differs from the iteration-2 checkpoint
    mid = load(full / "model_0000002.pth")
    assert any(not torch.equal(mid["model"][k], a["model"][k]) for k in a["model"])


MRT_ALL = ["TEACHER.BURN_IN_ITERS", "1", "MRT.DYNAMIC_THRESHOLD.ENABLED", "True",
           "MRT.SELECTIVE_RETRAINING.ENABLED", "True", "MRT.SELECTIVE_RETRAINING.PERIOD", "2",
           "MRT.MASKED_RECONSTRUCTION.ENABLED", "True"]


def test_resume_with_mrt_options_is_bit_exact(tool_env, tiny_mic_config, tmp_path):
    """The same with MRT's three options on: the dynamic thresholds, the weights selective
    retraining returns to (reset before iterations 3 and 5) and the decoder all resume."""
    opts = ITERS + MRT_ALL
    full = tmp_path / "full"
    p = run_train_net(["--config", tiny_mic_config, *opts, "OUTPUT_DIR", str(full)], tool_env)
    assert p.returncode == 0, p.stderr[-3000:]
    resumed = tmp_path / "resumed"
    p = _resume_from_iteration_2(full, resumed, tiny_mic_config, opts, tool_env)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = load(full / "model_final.pth"), load(resumed / "model_final.pth")
    assert_same_weights(a, b)
    assert any(k.startswith("mrt_decoder.") for k in a["model"])
    for k in a["dynamic_threshold"]:
        assert torch.equal(a["dynamic_threshold"][k], b["dynamic_threshold"][k]), k
    assert a["dynamic_threshold"]["seen"].any()
    sa = a["trainer"]["hooks"]["SelectiveRetrainingHook"]["initial"]
    sb = b["trainer"]["hooks"]["SelectiveRetrainingHook"]["initial"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _start(config, out, env, extra=()):
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "stdout.txt", "w")  # a pipe nobody reads would block the child
    return subprocess.Popen(
        [sys.executable, TRAIN_NET, "--config", config, "SOLVER.MAX_ITER", "100000", "DATASETS.TEST", "()",
         "OUTPUT_DIR", str(out), *extra],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def _output(out):
    return (out / "stdout.txt").read_text()[-3000:]


def _wait_for(path, proc, timeout=300):
    """Until ``path`` exists and is not empty."""
    start = time.time()
    while not (os.path.exists(path) and os.path.getsize(path) > 0):
        assert proc.poll() is None, _output(path.parent)
        assert time.time() - start < timeout, f"{path} did not appear"
        time.sleep(0.2)


def test_sigterm_at_any_step_then_resume_is_bit_exact(tool_env, tiny_mic_config, tmp_path):
    """A train_net.py process stopped by SIGTERM wherever it happens to be, then run again
    with --resume, ends with the student and teacher, bit for bit, of a run never stopped."""
    iters = ["SOLVER.MAX_ITER", "30", "SOLVER.CHECKPOINT_PERIOD", "10"]
    full = tmp_path / "full"
    p = run_train_net(["--config", tiny_mic_config, *iters, "DATASETS.TEST", "()", "OUTPUT_DIR", str(full)], tool_env)
    assert p.returncode == 0, p.stderr[-3000:]

    stopped = tmp_path / "stopped"
    proc = _start(tiny_mic_config, stopped, tool_env, iters)
    _wait_for(stopped / "model_0000009.pth", proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, _output(stopped)
    name = (stopped / "last_checkpoint").read_text()
    ckpt = load(stopped / name)
    stopped_at = ckpt["iteration"]
    assert 9 <= stopped_at < 29 and name == f"model_{stopped_at:07d}.pth"
    assert "teacher" in ckpt
    p = run_train_net(["--config", tiny_mic_config, "--resume", *iters, "DATASETS.TEST", "()", "OUTPUT_DIR", str(stopped)], tool_env)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = load(full / "model_final.pth"), load(stopped / "model_final.pth")
    assert a["iteration"] == b["iteration"] == 29
    assert_same_weights(a, b)


class SignalAt(HookBase):
    """Sends this process SIGTERM during iteration ``it``, as a scheduler would."""

    def __init__(self, it):
        self.it = it

    def before_step(self):
        if self.trainer.iter == self.it:
            os.kill(os.getpid(), signal.SIGTERM)


def state(trainer):
    return {"model": trainer.student.state_dict(), "teacher": trainer.teacher.model.state_dict()}


@pytest.mark.parametrize("stop_at", [2, 3])  # the last iteration of burn-in, the first of MIC
def test_sigterm_checkpoint_holds_the_state_after_every_hook(stop_at, synthetic, tmp_path):
    """Around the end of burn-in the teacher is copied from the student and then updated
    by the EMA: a run stopped there and resumed ends as one never stopped."""
    cfg = da_cfg(tmp_path / "full", mic=True, max_iter=6)
    cfg.TEACHER.BURN_IN_ITERS = 3
    cfg.SEED = 3
    seed_all_rng(cfg.SEED)  # as train_net.py does: the same initial weights
    full = DomainAdaptiveTrainer(cfg)
    full.resume_or_load(resume=False)
    full.train()

    cfg.OUTPUT_DIR = str(tmp_path / "stopped")
    seed_all_rng(cfg.SEED)
    stopped = DomainAdaptiveTrainer(cfg)
    stopped.resume_or_load(resume=False)
    stopped.register_hooks([SignalAt(stop_at)])
    with pytest.raises(SystemExit) as e:
        stopped.train()
    assert e.value.code == 128 + signal.SIGTERM
    assert load(tmp_path / "stopped" / f"model_{stop_at:07d}.pth")["iteration"] == stop_at

    resumed = DomainAdaptiveTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == stop_at + 1
    resumed.train()
    assert_same_weights(state(full), state(resumed))


def test_ctrl_c_saves_a_checkpoint(tool_env, tiny_mic_config, tmp_path):
    proc = _start(tiny_mic_config, tmp_path, tool_env)
    _wait_for(tmp_path / "metrics.json", proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, _output(tmp_path)
    assert load(tmp_path / (tmp_path / "last_checkpoint").read_text())["iteration"] >= 19


def test_kill_during_checkpointing_leaves_a_loadable_last_checkpoint(tool_env, tiny_mic_config, tmp_path):
    """SIGKILL at some point while a checkpoint is written every iteration: whatever
    `last_checkpoint` names must be complete."""
    proc = _start(tiny_mic_config, tmp_path, tool_env, ["SOLVER.CHECKPOINT_PERIOD", "1"])
    _wait_for(tmp_path / "model_0000004.pth", proc)
    proc.kill()
    proc.wait(timeout=60)
    name = (tmp_path / "last_checkpoint").read_text()
    ckpt = load(tmp_path / name)
    assert {"model", "teacher", "trainer", "iteration"} <= set(ckpt)
    assert not name.endswith(".tmp") and ".tmp-" not in name
