"""The training step's own machinery: per-step seeding, mixed precision (its dtype, the
gradient scaler for float16 and its state in checkpoints)."""
import random

import numpy as np
import pytest
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


def test_a_source_only_step_feeds_the_source_batch_alone(synthetic, tmp_path, monkeypatch):
    """SADA and MIC off: no target loader, so the step's data is the source batch itself
    (not a pair), and the model is called with it alone."""
    cfg = da_cfg(tmp_path, max_iter=2)
    cfg.SOLVER.IMS_PER_BATCH = 2
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    calls = []
    student = trainer.student
    real = type(student).forward
    monkeypatch.setattr(type(student), "forward", lambda self, *args, **kw: (calls.append(args), real(self, *args, **kw))[1])
    trainer.train()
    assert [len(args) for args in calls] == [1, 1]  # source only: no target, no pseudo-labels
    assert all(isinstance(args[0], list) and len(args[0]) == 2 and all("instances" in d for d in args[0]) for args in calls)
    history = trainer.storage.history
    assert history("loss_cls").values() and "loss_sada_img" not in trainer.storage.histories()
    assert 0.0 <= history("data_time").latest() < 60.0  # seconds spent waiting for data, not a clock reading


def test_a_non_finite_loss_stops_the_step_naming_the_term_and_iteration(synthetic, tmp_path, monkeypatch):
    cfg = da_cfg(tmp_path, sada=True, max_iter=3)
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    student = trainer.student
    real = type(student).forward

    def nan_at_second_step(self, *args, **kw):
        losses = real(self, *args, **kw)
        if trainer.iter == 1:
            losses["loss_sada_img"] = losses["loss_sada_img"] * float("nan")
        return losses

    monkeypatch.setattr(type(student), "forward", nan_at_second_step)
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    message = str(e.value)
    assert "Non-finite loss at iteration 1: {'loss_sada_img': nan}" in message
    assert "Lower SOLVER.BASE_LR, lengthen SOLVER.WARMUP_ITERS, or enable SOLVER.CLIP_GRADIENTS." in message


def test_a_model_left_in_eval_mode_is_refused(synthetic, tmp_path):
    trainer = DomainAdaptiveTrainer(da_cfg(tmp_path, sada=True, max_iter=1))
    trainer.resume_or_load(resume=False)
    trainer.student.eval()
    with pytest.raises(AssertionError, match=r"^\[DomainAdaptiveStep\] model was changed to eval mode!$"):
        trainer._trainer.run_step()
