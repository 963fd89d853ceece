"""Long jobs: exact resume, checkpoints that survive kills, SIGTERM / Ctrl-C, NaN."""
import os
import shutil
import signal
import subprocess
import sys
import time

import torch

from conftest import TRAIN_NET, run_train_net

ITERS = ["SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()"]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_weights(a, b):
    for part in ("model", "teacher"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"


def test_resume_is_bit_exact(tool_env, tiny_mic_config, tmp_path):
    """Stop at iteration 3 of 6 and --resume: same student and teacher as without stop.
    One data worker, so the stream positions of both loaders are exercised too."""
    opts = ITERS + ["DATALOADER.NUM_WORKERS", "1", "MIC.COLOR_JITTER_PROB", "0.5"]
    full = tmp_path / "full"
    p = run_train_net(["--config", tiny_mic_config, *opts, "OUTPUT_DIR", str(full)], tool_env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (full / "model_0000002.pth").exists()

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(full / "model_0000002.pth", resumed / "model_0000002.pth")
    (resumed / "last_checkpoint").write_text("model_0000002.pth")
    p = run_train_net(["--config", tiny_mic_config, "--resume", *opts, "OUTPUT_DIR", str(resumed)], tool_env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Loading trainer from" in p.stdout + p.stderr or "model_0000002.pth" in p.stdout + p.stderr
    a, b = load(full / "model_final.pth"), load(resumed / "model_final.pth")
    assert a["iteration"] == b["iteration"] == 5
    assert_same_weights(a, b)
    # and the run did move: the final student differs from the iteration-2 checkpoint
    mid = load(full / "model_0000002.pth")
    assert any(not torch.equal(mid["model"][k], a["model"][k]) for k in a["model"])


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


def test_sigterm_saves_a_checkpoint_and_resume_continues(tool_env, tiny_mic_config, tmp_path):
    proc = _start(tiny_mic_config, tmp_path, tool_env)
    _wait_for(tmp_path / "metrics.json", proc)  # first written after iteration 20
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, _output(tmp_path)
    name = (tmp_path / "last_checkpoint").read_text()
    ckpt = load(tmp_path / name)
    stopped_at = ckpt["iteration"]
    assert stopped_at >= 19 and name == f"model_{stopped_at:07d}.pth"
    assert "teacher" in ckpt
    p = run_train_net(
        ["--config", tiny_mic_config, "--resume", "SOLVER.MAX_ITER", str(stopped_at + 3), "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path)],
        tool_env,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert load(tmp_path / "model_final.pth")["iteration"] == stopped_at + 2


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
