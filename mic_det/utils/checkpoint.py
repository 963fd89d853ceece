"""Load the teacher or the student of a training checkpoint into a detector.

Training checkpoints hold both: ``model`` (the student's state dict) and ``teacher``
(the ``EMATeacher``'s, whose keys are ``model.<student key>``). Exported files
(``tools/export_model.py``) and stock detectron2 checkpoints hold a ``model`` only.
Every tool reads weights through :func:`load_detector_weights`, so they all agree on
which network "teacher" and "student" mean.
"""
import logging
import os
from typing import Dict

import torch
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager

logger = logging.getLogger(__name__)

WHICH = ("auto", "teacher", "student")
TEACHER_PREFIX = "model."
# Training-only heads: absent from exported weights and never used at inference.
TRAINING_ONLY_PREFIXES = ("sada.",)


def _read_checkpoint(path: str) -> dict:
    if not path:
        raise ValueError("no weights given: pass a checkpoint file (e.g. OUTPUT_DIR/model_final.pth)")
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    try:
        ckpt = torch.load(local, map_location="cpu")
    except Exception as e:
        raise ValueError(f"cannot read weights file {path!r} as a torch checkpoint: {e}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"weights file {path!r} holds a {type(ckpt).__name__}, not a state dict")
    return ckpt


def detector_state_dict(path: str, which: str = "auto"):
    """(state dict, which) of the ``which`` network in checkpoint ``path``.

    ``auto`` is the teacher when the checkpoint has one (the model MIC evaluates and
    keeps), else the student. Asking for a teacher the file does not hold is an error,
    never a silent fallback to the student.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    ckpt = _read_checkpoint(path)
    has_teacher = isinstance(ckpt.get("teacher"), dict) and len(ckpt["teacher"]) > 0
    if which == "auto":
        which = "teacher" if has_teacher else "student"
    if which == "teacher":
        if not has_teacher:
            raise ValueError(
                f"{path} holds no teacher (keys: {sorted(ckpt)}); it is not a MIC training checkpoint. "
                "Use --which student."
            )
        bad = [k for k in ckpt["teacher"] if not k.startswith(TEACHER_PREFIX)]
        if bad:
            raise ValueError(f"{path}: teacher keys without the {TEACHER_PREFIX!r} prefix: {bad[:5]}")
        state = {k[len(TEACHER_PREFIX):]: v for k, v in ckpt["teacher"].items()}
    else:
        state = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt
    return state, which


def load_detector_weights(model: torch.nn.Module, path: str, which: str = "auto") -> str:
    """Load the ``which`` network of checkpoint ``path`` into ``model``; return which
    one was loaded ("teacher" or "student").

    Strict on the detector: a missing or unexpected key, or a shape mismatch, is an
    error (it means the config does not describe the checkpoint's network). Only the
    training-only SADA heads may be missing on either side.
    """
    state, which = detector_state_dict(path, which)
    model_keys = set(model.state_dict())
    state = {k: v for k, v in state.items() if k in model_keys or not k.startswith(TRAINING_ONLY_PREFIXES)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"{path} ({which}) does not fit the model the config builds: {e}") from None
    missing = [k for k in result.missing_keys if not k.startswith(TRAINING_ONLY_PREFIXES)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path} ({which}) does not fit the model the config builds: missing keys "
            f"{missing[:8]}, unexpected keys {result.unexpected_keys[:8]}. Use the config the "
            "checkpoint was trained with."
        )
    logger.info(f"Loaded the {which} of {path}")
    return which


def build_detector(cfg, weights: str, which: str = "auto"):
    """The config's detector, in eval mode, with the ``which`` weights of ``weights``.
    Returns (model, which)."""
    model = build_model(cfg)
    which = load_detector_weights(model, weights, which)
    model.eval()
    return model, which


def exportable_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """The state dict of a stock detectron2 detector: training-only heads removed."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
