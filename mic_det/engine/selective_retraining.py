"""Selective retraining (MRT): every so often, give chosen parts of the student back the
weights they had when adaptation began, so that it can leave a region it was pulled into
by noisy pseudo-labels, while the heads and the teacher keep what they learnt.

Weights "when adaptation began": the student after the last burn-in step (the moment the
teacher is re-initialised), or without burn-in the loaded weights, which must then be a
trained detector (the trainer checks). The reset also drops those parameters' optimizer
state (momentum), which would otherwise push them straight back. It happens before the
step, so that evaluations and checkpoints after a step never see a student just reset. The saved weights travel in every checkpoint (through the
trainer's hook state), so a resumed run resets to the same weights; every process
resets at the same iteration from identical copies.
"""
import logging
from typing import Callable, Dict, Sequence

import torch
from detectron2.engine import HookBase
from detectron2.utils.events import get_event_storage
from torch import nn

logger = logging.getLogger(__name__)


def select_state(model: nn.Module, modules: Sequence[str]) -> Dict[str, torch.Tensor]:
    """The entries of ``model``'s state dict (parameters and buffers, as the live
    tensors) under the named modules; an unknown name is an error listing the modules."""
    state = model.state_dict(keep_vars=True)
    selected = {}
    for module in modules:
        prefix = module.rstrip(".") + "."
        found = {k: v for k, v in state.items() if k.startswith(prefix)}
        if not found:
            top = sorted({k.split(".")[0] for k in state})
            raise ValueError(
                f"MRT.SELECTIVE_RETRAINING.MODULES: {module!r} names no module of the model; "
                f"top-level modules: {top} (deeper names work too, e.g. 'backbone.bottom_up')."
            )
        selected.update(found)
    return selected


class SelectiveRetrainingHook(HookBase):
    """Resets ``modules`` of the student before iterations ``start_iter + k * period``
    (k >= 1; ``start_iter`` is the first iteration of adaptation): every ``period``
    iterations of adaptation, and never after the last step."""

    def __init__(self, student_fn: Callable[[], nn.Module], modules: Sequence[str], period: int, start_iter: int):
        if period < 1:
            raise ValueError(f"MRT.SELECTIVE_RETRAINING.PERIOD must be >= 1, got {period}")
        self.student_fn = student_fn
        self.modules = list(modules)
        self.period = period
        self.start_iter = start_iter
        self.initial: Dict[str, torch.Tensor] = {}  # name -> CPU copy
        select_state(student_fn(), self.modules)  # fail at build time on a bad name

    def remember(self):
        self.initial = {k: v.detach().cpu().clone() for k, v in select_state(self.student_fn(), self.modules).items()}

    def before_train(self):
        if self.initial:  # restored from a checkpoint
            expected = set(select_state(self.student_fn(), self.modules))
            if set(self.initial) != expected:
                raise ValueError(
                    f"MRT.SELECTIVE_RETRAINING.MODULES={self.modules} names other weights than the "
                    f"checkpoint's saved starting weights ({len(self.initial)} tensors, e.g. "
                    f"{sorted(set(self.initial) ^ expected)[:3]}): resume with the MODULES the run began with."
                )
            return
        if self.trainer.start_iter > self.start_iter:
            logger.warning(
                "Selective retraining: the checkpoint holds no starting weights (it was written "
                "without MRT.SELECTIVE_RETRAINING); resets will return to the weights of iteration %d.",
                self.trainer.start_iter,
            )
        if self.trainer.start_iter >= self.start_iter:
            self.remember()

    def before_step(self):
        it = self.trainer.iter
        if it > self.start_iter and (it - self.start_iter) % self.period == 0:
            self.reset()

    def after_step(self):
        if self.trainer.iter + 1 == self.start_iter:
            self.remember()

    @torch.no_grad()
    def reset(self):
        live = select_state(self.student_fn(), self.modules)
        optimizer = self.trainer.optimizer
        for name, value in self.initial.items():
            live[name].copy_(value)
            optimizer.state.pop(live[name], None)
        logger.info(
            "Selective retraining before iteration %d: %d tensors of %s reset to their weights "
            "at the start of adaptation; their optimizer state cleared.",
            self.trainer.iter, len(self.initial), self.modules,
        )
        get_event_storage().put_scalar("mrt/selective_retraining", 1.0, smoothing_hint=False)

    def state_dict(self):
        return {"initial": self.initial}

    def load_state_dict(self, state_dict):
        self.initial = {k: v.clone() for k, v in state_dict["initial"].items()}
