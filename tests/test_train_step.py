"""The training step's own machinery: per-step seeding, mixed precision (its dtype, the
gradient scaler for float16 and its state in checkpoints)."""
import random

import numpy as np
import torch

import mic_det.engine.train_step as train_step
from conftest import da_cfg
from mic_det.engine import DomainAdaptiveTrainer
from mic_det.engine.train_step import seed_step


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_step_is_a_function_of_seed_and_iteration():
    seed_step(3, 10)
    a = draws()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # whatever came before
    seed_step(3, 10)
    assert draws() == a, "every generator (python, numpy, torch) is seeded"
    seen = set()
    for seed in (3, 4):
        for it in range(50):
            seed_step(seed, it)
            seen.add(draws())
    assert len(seen) == 100, "each (seed, iteration) draws differently"


def train(cfg):
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer


def test_each_step_is_seeded_with_the_run_seed_and_its_iteration(synthetic, tmp_path, monkeypatch):
    seen = []
    real = train_step.seed_step
    monkeypatch.setattr(train_step, "seed_step", lambda seed, it: (seen.append((seed, it)), real(seed, it))[1])
    cfg = da_cfg(tmp_path, sada=True, max_iter=2)
    cfg.SEED = 11
    train(cfg)
    assert seen == [(11, 0), (11, 1)]


def features_dtype(trainer):
    dtypes = []
    trainer.student.backbone.register_forward_hook(lambda m, a, out: dtypes.append(out["p2"].dtype))
    return dtypes


def test_without_amp_the_step_runs_in_float32(synthetic, tmp_path):
    cfg = da_cfg(tmp_path, sada=True, max_iter=1)
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    dtypes = features_dtype(trainer)
    trainer.train()
    assert dtypes and set(dtypes) == {torch.float32}
    assert trainer._trainer.grad_scaler is None


def test_float16_amp_runs_in_float16_with_a_gradient_scaler_saved_and_restored(synthetic, tmp_path):
    cfg = da_cfg(tmp_path, mic=True, max_iter=1)  # float16 is slow on a CPU: one step
    cfg.SOLVER.AMP.ENABLED = True
    cfg.SOLVER.AMP.PRECISION = "float16"
    cfg.SOLVER.CHECKPOINT_PERIOD = 1
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    dtypes = features_dtype(trainer)
    trainer.train()
    assert set(dtypes) == {torch.float16}
    scaler = trainer._trainer.grad_scaler
    assert scaler is not None and scaler.get_scale() > 0
    state = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert "grad_scaler" in state["trainer"]["_trainer"]

    # a resumed run takes the scaler's state from the checkpoint
    (tmp_path / "last_checkpoint").write_text("model_0000000.pth")
    saved = torch.load(tmp_path / "model_0000000.pth", map_location="cpu", weights_only=False)
    saved["trainer"]["_trainer"]["grad_scaler"]["scale"] = 1234.0
    torch.save(saved, tmp_path / "model_0000000.pth")
    resumed = DomainAdaptiveTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed._trainer.grad_scaler.get_scale() == 1234.0


def test_bfloat16_amp_runs_in_bfloat16_without_a_scaler(synthetic, tmp_path):
    cfg = da_cfg(tmp_path, sada=True, max_iter=1)
    cfg.SOLVER.AMP.ENABLED = True
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    dtypes = features_dtype(trainer)
    trainer.train()
    assert set(dtypes) == {torch.bfloat16} and trainer._trainer.grad_scaler is None
    # a float16 checkpoint's scaler state is ignored by a run without a scaler
    trainer._trainer.load_state_dict({**trainer._trainer.state_dict(), "grad_scaler": {"scale": 5.0}})
    assert trainer._trainer.grad_scaler is None
