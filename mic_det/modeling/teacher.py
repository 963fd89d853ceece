"""The EMA teacher: a frozen copy of the student whose weights follow the student's as
an exponential moving average, used to predict pseudo-labels on target images."""
import copy
from typing import Dict, List, Tuple

import torch
from torch import nn

from detectron2.structures import Instances


class EMATeacher(nn.Module):
    """Holds ``self.model``, a copy of the student detector.

    Update rule, applied to the whole state dict (parameters, buffers and domain heads,
    as the reference does): floating-point entries become
    ``alpha * teacher + (1 - alpha) * student``; integer entries (e.g. BatchNorm's
    ``num_batches_tracked``) are copied from the student. The teacher never takes
    gradients and always stays in eval mode.
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.model.eval()
        self.restored = False

    @property
    def num_classes(self) -> int:
        """Classes of the detector's box head (the pseudo-label statistics count each)."""
        return self.model.roi_heads.num_classes

    def train(self, mode: bool = True):
        # The teacher predicts like a deployed model, whatever the trainer asks of it.
        return super().train(False)

    def _pairs(self, student: nn.Module):
        s = student.state_dict(keep_vars=True)
        t = self.model.state_dict(keep_vars=True)
        if s.keys() != t.keys():
            raise KeyError(f"student and teacher differ: {sorted(set(s) ^ set(t))[:10]}")
        return [(t[k].data, s[k].detach()) for k in t]

    def _split_pairs(self, student: nn.Module):
        """(teacher floats, student floats, integer pairs), built once per student: the
        update runs every step, and parameters and buffers are updated in place, so the
        same tensors stay valid."""
        # keyed by id: storing the student itself would register it as a submodule
        if getattr(self, "_split_for", None) != id(student):
            pairs = self._pairs(student)
            self._split = (
                [t for t, _ in pairs if t.is_floating_point()],
                [s for t, s in pairs if t.is_floating_point()],
                [(t, s) for t, s in pairs if not t.is_floating_point()],
            )
            self._split_for = id(student)
        return self._split

    @torch.no_grad()
    def update(self, student: nn.Module, alpha: float):
        """teacher = alpha * teacher + (1 - alpha) * student (integer buffers copied)."""
        floats_t, floats_s, integers = self._split_pairs(student)
        for t, s in integers:
            t.copy_(s)
        torch._foreach_mul_(floats_t, alpha)
        torch._foreach_add_(floats_t, floats_s, alpha=1.0 - alpha)

    def load_state_dict(self, state_dict, strict: bool = True):
        """Also marks the teacher as restored (the trainer tells a teacher from a checkpoint
        from a fresh one). Training-only heads (SADA's discriminators, MRT's decoder) may
        be missing from, or extra in, the checkpoint: a run may switch them on or off
        between runs; what the checkpoint lacks keeps the student's values."""
        from ..checkpoint import TRAINING_ONLY_PREFIXES

        optional = tuple("model." + p for p in TRAINING_ONLY_PREFIXES)
        own = set(self.state_dict())
        state_dict = {k: v for k, v in state_dict.items() if k in own or not k.startswith(optional)}
        result = super().load_state_dict(state_dict, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(optional)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"The checkpoint's teacher does not fit this model: missing {missing[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}."
            )
        self.restored = True
        return result

    @torch.no_grad()
    def copy_from(self, student: nn.Module):
        for t, s in self._pairs(student):
            t.copy_(s)

    @torch.no_grad()
    def predict(self, batched_inputs: List[dict]) -> List[Instances]:
        """Detections in the coordinates of the network input (resized, unpadded),
        i.e. the frame in which the student sees the same images."""
        return self.model.inference(batched_inputs, do_postprocess=False)

    @torch.no_grad()
    def predict_with_features(self, batched_inputs: List[dict]) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """:meth:`predict`, plus the backbone's features of the (unmasked) images, which
        MRT's masked feature reconstruction takes as its target. The steps of
        ``GeneralizedRCNN.inference``, keeping the features."""
        m = self.model
        images = m.preprocess_image(batched_inputs)
        features = m.backbone(images.tensor)
        proposals, _ = m.proposal_generator(images, features, None)
        results, _ = m.roi_heads(images, features, proposals, None)
        return results, features
