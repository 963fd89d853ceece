"""One training iteration of domain-adaptive detection.

source + target batch -> (teacher pseudo-labels on the unmasked target) -> student
losses on source, both domains (SADA) and the masked target (MIC) -> one backward, one
optimizer step. The EMA update of the teacher happens in a hook after the step.
"""
import random
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from detectron2.engine import SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ..modeling.dynamic_threshold import DynamicThreshold
from ..modeling.pseudo_labels import PseudoLabeler, pseudo_label_stats
from ..modeling.teacher import EMATeacher


def seed_step(seed: int, iteration: int):
    """Seed every generator the step draws from (masks, proposal and anchor sampling,
    dropout) from (seed, rank, iteration): a resumed run draws exactly what an
    uninterrupted one would, on every rank, with no generator state to save."""
    s = hash((seed, comm.get_rank(), iteration)) % 2**31
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def check_losses_finite(loss_dict, total: torch.Tensor, iteration: int):
    """Raise FloatingPointError naming the non-finite loss terms and the iteration."""
    if torch.isfinite(total).item():
        return
    bad = {k: float(v) for k, v in loss_dict.items() if not torch.isfinite(v).all()}
    raise FloatingPointError(
        f"Non-finite loss at iteration {iteration}: {bad}. The last checkpoint written before "
        "this iteration is intact. Lower SOLVER.BASE_LR, lengthen SOLVER.WARMUP_ITERS, or "
        "enable SOLVER.CLIP_GRADIENTS."
    )


class DomainAdaptiveStep(SimpleTrainer):
    """``SimpleTrainer`` whose data are ``(source, target)`` pairs (target may be None).

    Args:
        teacher: the EMA teacher, or None when MIC is off.
        mic_active: ``mic_active(iteration)`` says whether MIC runs at that iteration
            (it does not during burn-in).
        pseudo_labeler: the teacher's detections -> pseudo-labels (MIC.PSEUDO_LABEL_*).
        dynamic_threshold: MRT's per-class threshold, replacing the fixed one, or None.
        teacher_features: the levels of the teacher's features of the targets to pass to
            the model (MRT's masked feature reconstruction); empty: none.
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        *,
        teacher: Optional[EMATeacher],
        mic_active: Callable[[int], bool],
        pseudo_labeler: PseudoLabeler,
        amp_dtype: Optional[torch.dtype],
        seed: int,
        dynamic_threshold: Optional[DynamicThreshold] = None,
        teacher_features: Sequence[str] = (),
    ):
        super().__init__(model, data_loader, optimizer)
        self.seed = seed
        self.teacher = teacher
        self.mic_active = mic_active
        self.pseudo_labeler = pseudo_labeler
        self.dynamic_threshold = dynamic_threshold
        self.teacher_features = list(teacher_features)
        self.amp_dtype = amp_dtype
        self.device_type = next(model.parameters()).device.type
        # float16 needs loss scaling against underflow; bfloat16 has float32's range
        use_scaler = amp_dtype == torch.float16
        self.grad_scaler = torch.amp.GradScaler(self.device_type) if use_scaler else None

    def _autocast(self):
        return torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def run_step(self):
        assert self.model.training, "[DomainAdaptiveStep] model was changed to eval mode!"
        seed_step(self.seed, self.iter)
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        source, target = data if isinstance(data, tuple) else (data, None)
        data_time = time.perf_counter() - start

        pseudo_labels = teacher_features = None
        with self._autocast():
            if self.teacher is not None and target is not None and self.mic_active(self.iter):
                pseudo_labels, teacher_features = self.label_targets(target)
            if target is None:
                loss_dict = self.model(source)
            else:
                loss_dict = self.model(source, target, pseudo_labels, teacher_features=teacher_features)
        losses = sum(loss_dict.values())
        check_losses_finite(loss_dict, losses, self.iter)

        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self.after_backward()
        self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def label_targets(self, target):
        """The teacher's pseudo-labels of the target images (and, for MRT's
        reconstruction, its features of them), with their statistics logged."""
        storage = get_event_storage()
        teacher_features = None
        if self.teacher_features:
            predictions, features = self.teacher.predict_with_features(target)
            teacher_features = {k: features[k] for k in self.teacher_features}  # free the others
        else:
            predictions = self.teacher.predict(target)
        threshold = None
        if self.dynamic_threshold is not None:
            self.dynamic_threshold.update(predictions)
            threshold = self.dynamic_threshold.thresholds
            storage.put_scalars(**self.dynamic_threshold.log_values(threshold), smoothing_hint=False)
        pseudo_labels = self.pseudo_labeler(predictions, threshold)
        storage.put_scalars(**pseudo_label_stats(pseudo_labels, self.teacher.num_classes))
        return pseudo_labels, teacher_features

    def state_dict(self):
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
