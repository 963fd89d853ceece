"""The config: every key mic_det adds to detectron2's defaults, loading a YAML file with
command-line overrides, and the checks a config must pass before anything is built.

Defaults are the reference values of MIC on SADA for Cityscapes -> Foggy Cityscapes
(docs/reference_parity.md lists them with their sources), so the shipped YAML files only
state what differs. Every tool loads its config through :func:`load_config`.
"""
import os
import tempfile

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog

# which model(s) the final evaluation scores (TEST.EVAL_MODEL)
EVAL_MODELS = ("student", "teacher", "both")


def add_mic_config(cfg):
    """Add every mic_det key to a detectron2 config (in place) and return it."""
    _C = cfg

    # ---- Data -----------------------------------------------------------------------
    # Unlabelled target-domain datasets. Their annotations, if any, are dropped before
    # the loader is built: they never reach a loss, a sampler filter or a proposal list.
    _C.DATASETS.TRAIN_TARGET = ()
    # Target images per step, summed over all processes (like SOLVER.IMS_PER_BATCH,
    # which counts the labelled source images).
    _C.SOLVER.IMS_PER_BATCH_TARGET = 1
    # Custom datasets declared in the config (mic_det/data/custom/; load_config registers
    # them in every process). One child node per dataset name, e.g.
    #   CUSTOM: {fire_train: {FORMAT: "yolo", ROOT: "data/fire", SPLIT: "train"}}
    # FORMAT is "coco" (JSON_FILE, IMAGE_ROOT), "voc" (ROOT or ANN_DIR, IMAGE_DIR, SPLIT or
    # IMAGESET, NAMES, ONE_BASED), "yolo" (ROOT, SPLIT or IMAGE_DIR, LABEL_DIR, DATA_YAML or
    # NAMES) or "images" (IMAGE_DIR: unlabelled images, for targets). Relative paths are
    # relative to ROOT; ROOT to the working directory. New datasets are declared in YAML
    # files: the command line can only change keys a YAML file already set.
    _C.DATASETS.CUSTOM = CN(new_allowed=True)
    # The class list of the custom datasets, in the model's order; their class names are
    # matched to it case-insensitively. Empty: the classes of the first DATASETS.TRAIN
    # dataset (after CLASS_MAP and IGNORE_CLASSES).
    _C.DATASETS.CLASSES = ()
    # Renames applied to custom datasets' class names before matching, as "from:to"
    # strings, e.g. ["flame:fire", "Smoke-Plume:smoke"]; several names may map to one.
    _C.DATASETS.CLASS_MAP = ()
    # Custom datasets' class names whose boxes are dropped; their images are kept (as
    # background where no other box is left), e.g. ["default"].
    _C.DATASETS.IGNORE_CLASSES = ()

    # ---- SADA: scale-aware adversarial alignment ---------------------------------------
    _C.MODEL.SADA = CN()
    # Off: the model is exactly a stock Faster R-CNN (same losses, same state-dict keys).
    _C.MODEL.SADA.ENABLED = False
    # Image level: one conv discriminator per feature map named here.
    _C.MODEL.SADA.IMG_IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    _C.MODEL.SADA.IMG_HIDDEN_DIM = 512
    # Std of the normal init of both conv layers (reference 0.001: learns slowly; short
    # runs need more, e.g. the demo's).
    _C.MODEL.SADA.IMG_INIT_STD = 0.001
    # Gradient reversal weight in front of the image-level discriminators.
    _C.MODEL.SADA.IMG_GRL_WEIGHT = 0.025
    _C.MODEL.SADA.IMG_LOSS_WEIGHT = 1.0
    # Instance level: one MLP per ROI pooling level, on box-head features of proposals
    # drawn uniformly, INS_PROPOSALS_PER_IMAGE per image.
    _C.MODEL.SADA.INS_HIDDEN_DIM = 1024
    _C.MODEL.SADA.INS_INIT_STD = 0.01  # all three linear layers (reference 0.01)
    _C.MODEL.SADA.INS_DROPOUT = 0.5
    _C.MODEL.SADA.INS_GRL_WEIGHT = 0.1
    _C.MODEL.SADA.INS_LOSS_WEIGHT = 1.0
    _C.MODEL.SADA.INS_PROPOSALS_PER_IMAGE = 256
    # Draw them from the RPN's proposals plus, as the reference does, each source image's
    # ground-truth boxes and one whole-image box per target image (no target label).
    # False: from the RPN's proposals alone.
    _C.MODEL.SADA.INS_APPEND_BOXES = True
    # Consistency between the image-level probability pooled over a proposal and that
    # proposal's instance-level probability. Its gradient into the detector is scaled
    # (not reversed) by CST_GRAD_SCALE x the GRL weight of each branch.
    _C.MODEL.SADA.CST_LOSS_WEIGHT = 1.0
    _C.MODEL.SADA.CST_GRAD_SCALE = 0.1

    # ---- MIC: masked image consistency -------------------------------------------------
    _C.MIC = CN()
    _C.MIC.ENABLED = False
    # Side of a square mask block, in input pixels (after resizing).
    _C.MIC.MASK_BLOCK_SIZE = 32
    # A block is kept where v > MASK_RATIO, v ~ U(0, 1): the expected masked fraction.
    _C.MIC.MASK_RATIO = 0.5
    _C.MIC.LOSS_WEIGHT = 1.0
    # Teacher boxes with score >= this become pseudo-labels (delta in the paper).
    _C.MIC.PSEUDO_LABEL_THRESHOLD = 0.8
    # Per-class NMS IoU applied to the surviving boxes (1.0 turns it off).
    _C.MIC.PSEUDO_LABEL_NMS_THRESH = 0.5
    # Teacher boxes larger than this fraction of their image are not used (before NMS).
    # 1.0: any size (the reference). A safeguard against the teacher's failure under a
    # large shift, boxes that cover the whole hazy sky (docs/method.md).
    _C.MIC.PSEUDO_LABEL_MAX_AREA = 1.0
    # How each sample of the MIC loss is weighted:
    #   "teacher": by the confidence of the pseudo-box it is matched to (the paper);
    #              background samples weigh 1.
    #   "student": by the student's own confidence (the reference code's behaviour).
    #   "none":    all samples weigh 1.
    _C.MIC.QUALITY_WEIGHT = "teacher"
    # Box-regression losses on pseudo-labels (off in the reference, following SADA).
    _C.MIC.BOX_REGRESSION = False
    # Also train on a masked copy of the labelled source images once MIC runs: an extra
    # detection loss (loss_mic_src_*, times LOSS_WEIGHT). The ordinary source losses and
    # SADA keep the unmasked images. Helps small domain gaps, hurts large ones.
    _C.MIC.MASK_SOURCE = False
    # Photometric augmentation of the target image the student sees, drawn per image and
    # applied before masking (mic_det/modeling/photometric.py). The reference config
    # switches it on with jitter 0.8 / strength 0.2 and blur 0.5 (its code drew the on/off
    # once per run instead of per image).
    _C.MIC.COLOR_JITTER_PROB = 0.0
    # brightness, contrast, saturation: factor in [1 - s, 1 + s]; hue: +-s of a turn
    _C.MIC.COLOR_JITTER_STRENGTH = 0.2
    _C.MIC.BLUR_PROB = 0.0
    _C.MIC.BLUR_SIGMA = (0.15, 1.15)  # Gaussian blur sigma range, in pixels

    # ---- Teacher ----------------------------------------------------------------------
    _C.TEACHER = CN()
    # teacher = alpha * teacher + (1 - alpha) * student, after every optimizer step.
    _C.TEACHER.EMA_ALPHA = 0.9
    # Update the teacher every this many iterations.
    _C.TEACHER.UPDATE_PERIOD = 1
    # Iterations without MIC at the start; when they end the teacher is re-initialised
    # from the student. 0 = MIC from the first iteration (the reference).
    _C.TEACHER.BURN_IN_ITERS = 0

    # ---- MRT: Masked Retraining Teacher's three ideas, on Faster R-CNN ------------------
    # Each needs MIC.ENABLED and runs only while MIC does (after TEACHER.BURN_IN_ITERS).
    # docs/mrt.md says what each does and what it measured.
    _C.MRT = CN()
    # Per-class pseudo-label threshold that follows the teacher's scores:
    #   threshold_c = clip(mean_c + K * std_c, MIC.PSEUDO_LABEL_THRESHOLD, CEILING)
    # mean_c / std_c: exponential moving averages (MOMENTUM) of the scores of the teacher's
    # class-c detections at or above MIC.PSEUDO_LABEL_THRESHOLD, over all processes. A
    # class not seen yet uses MIC.PSEUDO_LABEL_THRESHOLD. Logged as mrt/threshold/<c>.
    _C.MRT.DYNAMIC_THRESHOLD = CN()
    _C.MRT.DYNAMIC_THRESHOLD.ENABLED = False
    _C.MRT.DYNAMIC_THRESHOLD.K = -1.0
    _C.MRT.DYNAMIC_THRESHOLD.MOMENTUM = 0.99
    _C.MRT.DYNAMIC_THRESHOLD.CEILING = 0.95
    # Every PERIOD iterations of adaptation, the student's modules named in MODULES
    # (state-dict prefixes; "backbone" = ResNet and FPN) get back the weights they had
    # when adaptation began (end of burn-in, or the loaded weights without burn-in), and
    # their optimizer state is cleared. Heads and teacher are kept.
    _C.MRT.SELECTIVE_RETRAINING = CN()
    _C.MRT.SELECTIVE_RETRAINING.ENABLED = False
    _C.MRT.SELECTIVE_RETRAINING.PERIOD = 2000
    _C.MRT.SELECTIVE_RETRAINING.MODULES = ["backbone"]
    # A two-layer decoder on the student's FPN features of the masked target image
    # predicts the teacher's features of the unmasked image at the masked positions
    # (loss_mrt_recon, mean squared error). Training only: not in exported weights.
    _C.MRT.MASKED_RECONSTRUCTION = CN()
    _C.MRT.MASKED_RECONSTRUCTION.ENABLED = False
    _C.MRT.MASKED_RECONSTRUCTION.IN_FEATURES = ["p3", "p4"]
    _C.MRT.MASKED_RECONSTRUCTION.HIDDEN_DIM = 256
    # Loss weight when adaptation begins; "linear" decays it to 0 at SOLVER.MAX_ITER,
    # "none" keeps it.
    _C.MRT.MASKED_RECONSTRUCTION.LOSS_WEIGHT = 1.0
    _C.MRT.MASKED_RECONSTRUCTION.DECAY = "linear"

    # ---- Mixed precision --------------------------------------------------------------
    # With SOLVER.AMP.ENABLED, student forward and teacher inference run under autocast
    # in this dtype: "bfloat16" (no loss scaling needed; Ampere and newer GPUs, CPUs) or
    # "float16" (with a gradient scaler).
    _C.SOLVER.AMP.PRECISION = "bfloat16"

    # ---- Evaluation -------------------------------------------------------------------
    # Which model(s) to evaluate: "student", "teacher" or "both".
    _C.TEST.EVAL_MODEL = "student"
    # Keep OUTPUT_DIR/model_best.pth by this metric of the first test set (teacher when
    # it is evaluated, else student). Empty string: no best checkpoint.
    _C.TEST.BEST_CHECKPOINT_METRIC = "bbox/AP50"
    return cfg


def load_config(config_file: str, opts) -> CN:
    """get_cfg() + mic_det keys + the YAML file + command-line overrides, with errors
    that name the file and the key. Registers the file's DATASETS.CUSTOM datasets: every
    process (and every tool) loads its config through here, so each registers them."""
    from .data import register_custom_datasets  # the data package reads configs, not the reverse

    cfg = add_mic_config(get_cfg())
    if not os.path.isfile(config_file):
        raise SystemExit(f"error: config file {config_file!r} does not exist")
    try:
        cfg.merge_from_file(config_file)
    except KeyError as e:
        raise SystemExit(
            f"error: {config_file}: {e.args[0]}. Check the spelling; the keys mic_det adds "
            "are listed in mic_det/config.py, the rest are detectron2's."
        ) from None
    try:
        cfg.merge_from_list(opts)
    except (KeyError, AssertionError, ValueError) as e:
        raise SystemExit(f"error: command-line override {opts}: {e}") from None
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    register_custom_datasets(cfg)
    return cfg


def check_output_dir(path: str) -> None:
    """OUTPUT_DIR must be a folder this process can write: checked before detectron2's
    default_setup, which would fail deep inside its logger or config dump."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise SystemExit(
            f"error: OUTPUT_DIR {path!r} is not a writable folder ({e.strerror or e}). "
            "Set OUTPUT_DIR to a folder you can write (it is created if missing)."
        ) from None


def check_config(cfg) -> None:
    """Catch settings that would otherwise fail deep in a stack trace or train silently
    wrong. Needs the datasets registered (it compares their class lists)."""
    if cfg.TEST.EVAL_MODEL not in EVAL_MODELS:
        raise ValueError(f"TEST.EVAL_MODEL must be one of {EVAL_MODELS}, got {cfg.TEST.EVAL_MODEL!r}")
    if cfg.TEST.EVAL_MODEL != "student" and not cfg.MIC.ENABLED:
        raise ValueError(f"TEST.EVAL_MODEL={cfg.TEST.EVAL_MODEL!r} needs a teacher, but MIC.ENABLED is False")
    needs_target = cfg.MODEL.SADA.ENABLED or cfg.MIC.ENABLED
    if needs_target and not cfg.DATASETS.TRAIN_TARGET:
        raise ValueError("MODEL.SADA / MIC are enabled but DATASETS.TRAIN_TARGET is empty: name the unlabelled target dataset(s).")
    if not 0.0 < cfg.MIC.PSEUDO_LABEL_MAX_AREA <= 1.0:
        raise ValueError(f"MIC.PSEUDO_LABEL_MAX_AREA must be in (0, 1] (a fraction of the image), got {cfg.MIC.PSEUDO_LABEL_MAX_AREA}")
    if cfg.TEACHER.BURN_IN_ITERS < 0:
        raise ValueError(f"TEACHER.BURN_IN_ITERS must be >= 0, got {cfg.TEACHER.BURN_IN_ITERS}")
    check_mrt_config(cfg)
    check_class_lists(cfg)


def check_mrt_config(cfg) -> None:
    """MRT's options need MIC (they act on its teacher, pseudo-labels and masked view)
    and values in range."""
    mrt = cfg.MRT
    on = [k for k in ("DYNAMIC_THRESHOLD", "SELECTIVE_RETRAINING", "MASKED_RECONSTRUCTION") if mrt[k].ENABLED]
    if on and not cfg.MIC.ENABLED:
        raise ValueError(f"MRT.{on[0]}.ENABLED needs MIC.ENABLED: MRT's options work on MIC's teacher and masked images.")
    dt = mrt.DYNAMIC_THRESHOLD
    if dt.ENABLED:
        if not 0.0 <= dt.MOMENTUM < 1.0:
            raise ValueError(f"MRT.DYNAMIC_THRESHOLD.MOMENTUM must be in [0, 1), got {dt.MOMENTUM}")
        if not cfg.MIC.PSEUDO_LABEL_THRESHOLD <= dt.CEILING <= 1.0:
            raise ValueError(
                f"MRT.DYNAMIC_THRESHOLD.CEILING must be in [MIC.PSEUDO_LABEL_THRESHOLD "
                f"({cfg.MIC.PSEUDO_LABEL_THRESHOLD}), 1], got {dt.CEILING}"
            )
    sr = mrt.SELECTIVE_RETRAINING
    if sr.ENABLED:
        if sr.PERIOD < 1:
            raise ValueError(f"MRT.SELECTIVE_RETRAINING.PERIOD must be >= 1, got {sr.PERIOD}")
        if not sr.MODULES:
            raise ValueError("MRT.SELECTIVE_RETRAINING.MODULES is empty: name the modules to reset, e.g. ['backbone'].")
    mr = mrt.MASKED_RECONSTRUCTION
    if mr.ENABLED:
        if mr.DECAY not in ("linear", "none"):
            raise ValueError(f"MRT.MASKED_RECONSTRUCTION.DECAY must be 'linear' or 'none', got {mr.DECAY!r}")
        unknown = [f for f in mr.IN_FEATURES if f not in cfg.MODEL.RPN.IN_FEATURES]
        if not mr.IN_FEATURES or unknown:
            raise ValueError(
                f"MRT.MASKED_RECONSTRUCTION.IN_FEATURES={list(mr.IN_FEATURES)}: choose one or more of "
                f"the FPN levels {list(cfg.MODEL.RPN.IN_FEATURES)}."
            )


def check_class_lists(cfg) -> None:
    """Source, target and test datasets must name the same classes in the same order."""
    reference_name = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None
    if reference_name is None:
        return
    reference = list(MetadataCatalog.get(reference_name).get("thing_classes", []))
    for role, names in (("DATASETS.TRAIN", cfg.DATASETS.TRAIN), ("DATASETS.TRAIN_TARGET", cfg.DATASETS.TRAIN_TARGET), ("DATASETS.TEST", cfg.DATASETS.TEST)):
        for name in names:
            classes = MetadataCatalog.get(name).get("thing_classes", None)
            if classes is not None and list(classes) != reference:
                raise ValueError(
                    f"Class lists differ: {reference_name!r} (DATASETS.TRAIN) has {reference}, "
                    f"{name!r} ({role}) has {list(classes)}. Every dataset must use the same "
                    "classes in the same order."
                )
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != len(reference) and reference:
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES} but "
            f"{reference_name!r} has {len(reference)} classes {reference}."
        )
