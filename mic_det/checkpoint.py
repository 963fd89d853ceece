"""Checkpoints: written so they are never half a file, read so that weights of another
network are an error, and the teacher or the student of a training checkpoint picked out
for the tools.

Writing: data go to a temporary file that is renamed into place, and `last_checkpoint` is
only updated after that rename. A crash or kill during a save leaves the previous
checkpoint, and the pointer to it, intact.

Loading for training: detectron2 skips every missing or mis-shaped key with a warning, so
weights of another network would silently leave the model mostly random.
:func:`check_weights_fit` turns that into an error naming the file.

Loading for the tools: training checkpoints hold both networks, ``model`` (the student's
state dict) and ``teacher`` (the ``EMATeacher``'s, whose keys are ``model.<student
key>``); exported files and stock detectron2 checkpoints hold a ``model`` only. Every
tool reads weights through :func:`load_detector_weights`, so they all agree on which
network "teacher" and "student" mean."""
import logging
import os
from typing import Dict

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager

from .utils.io import atomic_write

logger = logging.getLogger(__name__)

# Training-only heads: absent from exported weights, never used at inference, and never
# needed from a checkpoint (stock detectron2 checkpoints have none).
TRAINING_ONLY_PREFIXES = ("sada.", "mrt_decoder.")
# Keys a checkpoint may lack or hold in another shape without being for another network:
# SADA's discriminators and MRT's reconstruction decoder (training only: stock detectron2
# checkpoints have none), the box predictor (its shape follows the class count:
# fine-tuning re-initialises it) and the pixel statistics (taken from the config).
REINITIALISED_PREFIXES = ("sada.", "mrt_decoder.", "roi_heads.box_predictor.", "pixel_mean", "pixel_std")
# Below this fraction of the other keys found in the checkpoint, it is not for this model.
# An ImageNet backbone (backbone.bottom_up.* only) covers well over half of a Faster R-CNN.
MIN_KEYS_FOUND = 0.1
# Above this fraction of the shared keys with another shape, it is another architecture
# (R-50 weights in an R-18 model: ~27%; another class count or anchor count: under 5%).
MAX_SHAPE_MISMATCH = 0.2


def check_weights_path(path: str, key: str = "MODEL.WEIGHTS"):
    """A local weights file that does not exist is an error naming the key and the path
    (fvcore would raise a bare AssertionError). URLs (detectron2://, https://) are left
    to the path manager, which downloads them."""
    if path and "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(
            f"{key}: weights file {path!r} does not exist (resolved against {os.getcwd()}). "
            f"Set {key} to a checkpoint file, a detectron2:// URL, or '' to start from random weights."
        )


def _dropped_by_heuristics(missing, unexpected):
    """Model keys that detectron2's name-matching heuristics (.pkl files) matched and then
    dropped for their shape: the checkpoint key left over is a dotted suffix of them."""
    return {m for m in missing if any(m.endswith("." + u) for u in unexpected)}


def check_weights_fit(model_keys, incompatible, path: str, strict: bool = False, heuristics: bool = False):
    """Raise ValueError naming ``path`` when the checkpoint is not for this model.

    ``incompatible`` is what detectron2's ``_load_model`` returns (missing_keys,
    unexpected_keys, incorrect_shapes). Only keys outside :data:`REINITIALISED_PREFIXES`
    count. The checkpoint does not fit when under :data:`MIN_KEYS_FOUND` of those keys
    are in it (nothing or almost nothing loaded: a random state dict, another kind of
    model), or when over :data:`MAX_SHAPE_MISMATCH` of the keys it shares with the model
    have another shape (another backbone depth or width). Backbone-only ImageNet weights
    (FPN, RPN and ROI heads missing) and another class count (box predictor re-shaped)
    pass, with detectron2's warnings. ``heuristics``: the file was matched by name
    heuristics (ImageNet .pkl), which drop mis-shaped keys themselves; they are found again
    by name.

    ``strict`` (evaluation: a re-initialised layer makes the results meaningless): every
    key but SADA's and the pixel statistics must load."""
    missing = set(incompatible.missing_keys)
    if strict:
        bad = sorted(k for k in missing if not k.startswith((*TRAINING_ONLY_PREFIXES, "pixel_mean", "pixel_std")))
        if bad:
            raise ValueError(
                f"Weights {path!r} do not fit the model this config builds: {len(bad)} key(s) missing or of another shape, "
                f"e.g. {bad[:5]}; evaluating would use random weights there. Use the config the checkpoint "
                "was trained with (MODEL.ROI_HEADS.NUM_CLASSES, MODEL.RESNETS.DEPTH, ...) or other MODEL.WEIGHTS."
            )
    keys = [k for k in model_keys if not k.startswith(REINITIALISED_PREFIXES)]
    if not keys:
        return
    mismatched = {k for k, *_ in incompatible.incorrect_shapes}
    if heuristics:
        mismatched |= _dropped_by_heuristics(missing, incompatible.unexpected_keys)
    mismatched = sorted(k for k in mismatched if not k.startswith(REINITIALISED_PREFIXES))
    loaded = [k for k in keys if k not in missing]
    found = len(loaded) + len(mismatched)
    hint = (
        "Set MODEL.WEIGHTS to weights of this architecture (same MODEL.RESNETS.DEPTH, widths and FPN, "
        "or ImageNet backbone weights), or use the config the checkpoint was trained with."
    )
    if found < MIN_KEYS_FOUND * len(keys):
        raise ValueError(
            f"Weights {path!r} do not fit the model this config builds: only {found} of the model's {len(keys)} "
            f"parameter/buffer keys are in the file (e.g. missing {sorted(missing)[:3]}; checkpoint keys the model "
            f"lacks: {sorted(incompatible.unexpected_keys)[:3]}). {hint}"
        )
    if len(mismatched) > MAX_SHAPE_MISMATCH * found:
        raise ValueError(
            f"Weights {path!r} do not fit the model this config builds: {len(mismatched)} of the {found} keys they share "
            f"with the model have another shape (e.g. {mismatched[:3]}; the warnings above give the shapes): "
            f"they were saved from another architecture. {hint}"
        )


class AtomicCheckpointer(DetectionCheckpointer):
    """Also records what each load left out (``last_load``: path and detectron2's
    incompatible keys) for :meth:`check_last_load`."""

    last_load = None

    def load(self, path, *args, **kwargs):
        self.last_load = None
        self._loading = path
        return super().load(path, *args, **kwargs)

    def _load_file(self, filename):
        try:
            return super()._load_file(filename)
        except Exception as e:
            raise ValueError(f"cannot read checkpoint {filename!r} ({type(e).__name__}: {e}); is it a torch or detectron2 .pkl file?") from e

    def _load_model(self, checkpoint):
        heuristics = bool(checkpoint.get("matching_heuristics", False))
        incompatible = super()._load_model(checkpoint)
        self.last_load = (self._loading, incompatible, heuristics)
        return incompatible

    def check_last_load(self, strict: bool = False):
        """Raise if the last :meth:`load` read weights that do not fit the model (see
        :func:`check_weights_fit`); nothing loaded (empty path) passes."""
        if self.last_load is not None:
            path, incompatible, heuristics = self.last_load
            check_weights_fit(self.model.state_dict().keys(), incompatible, path, strict=strict, heuristics=heuristics)

    def save(self, name: str, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        with atomic_write(path, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str):
        path = os.path.join(self.save_dir, "last_checkpoint")
        with atomic_write(path) as f:
            f.write(last_filename_basename)


# ---- the teacher or the student of a checkpoint, for the tools -------------------------

WHICH = ("auto", "teacher", "student")
TEACHER_PREFIX = "model."


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
