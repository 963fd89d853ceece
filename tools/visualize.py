#!/usr/bin/env python
"""Look at what MIC trains on, and at how a run went.

    # one PNG per target image: the image, its masked view, the teacher's pseudo-labels,
    # the student's predictions and the ground truth (when the dataset has labels)
    python tools/visualize.py batch --config CFG --weights OUTPUT_DIR/model_final.pth --output DIR \
        [--num-images 4] [--dataset NAME] [--score-threshold 0.5] [--seed 0] [KEY VALUE ...]

    # losses, pseudo-labels per image and AP50 of teacher and student over iterations
    python tools/visualize.py curves --output-dir OUTPUT_DIR [--out OUTPUT_DIR/curves.png]

`batch` shows the network's input frame (test-time resize, no flip), so boxes and mask
blocks line up: masking is mic_det's own (``MaskedImageConsistency.masked_view``, or
``BlockMasker`` at MIC.MASK_BLOCK_SIZE / MIC.MASK_RATIO when MIC is off in the config) on
the normalised tensor, un-normalised for display; pseudo-labels are the teacher's
detections filtered by the training step's ``PseudoLabeler`` (MIC.PSEUDO_LABEL_THRESHOLD,
MIC.PSEUDO_LABEL_MAX_AREA, MIC.PSEUDO_LABEL_NMS_THRESH), exactly as a training step makes them. The default dataset
is DATASETS.TRAIN_TARGET[0] (else DATASETS.TEST[0]).
"""
import argparse
import copy
import json
import logging
import math
import os
import re
import sys

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.structures import BoxMode  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from mic_det.config import load_config  # noqa: E402
from mic_det.data.loaders import CheckedDatasetMapper  # noqa: E402
from mic_det.modeling import BlockMasker, PseudoLabeler  # noqa: E402
from mic_det.checkpoint import build_detector  # noqa: E402
from mic_det.inference import class_names  # noqa: E402
from mic_det.utils.drawing import draw_boxes, draw_instances  # noqa: E402

logger = logging.getLogger("mic_det")

DISPLAY_SIZE = 480  # small inputs are enlarged (nearest neighbour) to about this many pixels


def fail(message):
    raise SystemExit(f"error: {message}")


# ---------------------------------------------------------------- batch
def to_display(chw: torch.Tensor, input_format: str) -> np.ndarray:
    """A (C, H, W) float tensor in 0..255 and the model's channel order -> BGR uint8."""
    image = chw.detach().cpu().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(image[:, :, ::-1] if input_format == "RGB" else image)


def ground_truth(dataset_dict: dict, original_hw, input_hw):
    """(boxes in the network-input frame, classes) of the dataset's annotations, or
    None when the dataset has no labels."""
    if "annotations" not in dataset_dict:
        return None
    anns = [a for a in dataset_dict["annotations"] if not a.get("iscrowd", 0)]
    sy, sx = input_hw[0] / original_hw[0], input_hw[1] / original_hw[1]
    boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4) * [sx, sy, sx, sy]
    return boxes, [int(a["category_id"]) for a in anns]


def masker_of(model, cfg) -> BlockMasker:
    mic = getattr(model, "mic", None)
    return mic.masker if mic is not None else BlockMasker(cfg.MIC.MASK_BLOCK_SIZE, cfg.MIC.MASK_RATIO)


def masked_view(model, cfg, images) -> torch.Tensor:
    """The masked view a training step gives the student: the model's own MIC masking
    (with any photometric augmentation) when MIC is on, else a BlockMasker from the config."""
    if getattr(model, "mic", None) is not None:
        return model.mic.masked_view(model, images).tensor
    return masker_of(model, cfg)(images.tensor)


def registered_datasets():
    return sorted(n for n in DatasetCatalog.list() if not n.startswith(("coco_", "lvis_", "keypoints_")))


def save_grid(panels, title, path):
    """panels: [(title, BGR image)], all the same size."""
    h, w = panels[0][1].shape[:2]
    ncols = 3 if len(panels) > 4 else 2
    nrows = math.ceil(len(panels) / ncols)
    panel_w = 5.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols, nrows * (panel_w * h / w + 0.5)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, image) in zip(axes.flat, panels):
        ax.imshow(image[:, :, ::-1])
        ax.set_title(name, fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_teacher_and_student(cfg, weights):
    """(teacher, its panel name, student); a checkpoint without a teacher (SADA or
    source-only run) shows the student's pseudo-labels instead, and says so."""
    try:
        student, _ = build_detector(cfg, weights, "student")
        try:
            return build_detector(cfg, weights, "teacher")[0], "teacher", student
        except ValueError:
            logger.warning(f"{weights} holds no teacher: the pseudo-label panel shows the student's")
            return student, "student (no teacher in checkpoint)", student
    except (FileNotFoundError, ValueError) as e:
        fail(e)


def batch(args):
    cfg = load_config(args.config, args.opts)
    dataset = args.dataset or (list(cfg.DATASETS.TRAIN_TARGET) + list(cfg.DATASETS.TEST) + [None])[0]
    if dataset is None:
        fail("the config names no DATASETS.TRAIN_TARGET or DATASETS.TEST: pass --dataset NAME")
    if dataset not in DatasetCatalog.list():
        fail(f"dataset {dataset!r} is not registered (registered: {registered_datasets()})")
    dicts = DatasetCatalog.get(dataset)[: args.num_images]
    if not dicts:
        fail(f"dataset {dataset!r} has no images")
    teacher, teacher_name, student = load_teacher_and_student(cfg, args.weights)
    names = class_names(cfg)
    mapper = CheckedDatasetMapper(cfg, is_train=False)  # test-time resize, no flip
    labeler = PseudoLabeler.from_config(cfg)
    block = masker_of(student, cfg)
    os.makedirs(args.output, exist_ok=True)
    torch.manual_seed(args.seed)
    written = []
    for index, d in enumerate(dicts):
        inputs = [mapper(copy.deepcopy(d))]
        with torch.no_grad():
            # As EMATeacher.predict: detections in the network-input frame.
            teacher_pred = teacher.inference(inputs, do_postprocess=False)[0].to("cpu")
            pseudo = labeler([teacher_pred])[0]
            student_pred = student.inference(inputs, do_postprocess=False)[0].to("cpu")
            student_pred = student_pred[student_pred.scores >= args.score_threshold]
            images = student.preprocess_image(inputs)
            masked = masked_view(student, cfg, images)
        h, w = images.image_sizes[0]
        image = to_display(inputs[0]["image"], cfg.INPUT.FORMAT)
        mask_img = to_display(masked[0, :, :h, :w] * student.pixel_std + student.pixel_mean, cfg.INPUT.FORMAT)
        scale = max(1, math.ceil(DISPLAY_SIZE / max(h, w)))
        if scale > 1:
            size = (w * scale, h * scale)
            image, mask_img = (cv2.resize(x, size, interpolation=cv2.INTER_NEAREST) for x in (image, mask_img))
            pseudo.gt_boxes.scale(scale, scale)
            student_pred.pred_boxes.scale(scale, scale)
        panels = [
            (f"input ({w}x{h}, as the network sees it)", image),
            (f"masked: {block.block_size}px blocks, ratio {block.ratio:g}", mask_img),
            (f"{teacher_name} pseudo-labels (score >= {labeler.score_threshold:g}): {len(pseudo)}", draw_instances(image, pseudo, names)),
            (f"student predictions (score >= {args.score_threshold:g}): {len(student_pred)}",
             draw_instances(image, student_pred, names)),
        ]
        gt = ground_truth(d, (inputs[0]["height"], inputs[0]["width"]), (h, w))
        if gt is not None:
            boxes, classes = gt
            labels = [names[c] for c in classes]
            panels.append((f"ground truth: {len(classes)}", draw_boxes(image, boxes * scale, classes, labels)))
        name = os.path.splitext(os.path.basename(d["file_name"]))[0]
        path = os.path.join(args.output, f"batch_{index:03d}_{name}.png")
        save_grid(panels, f"{dataset}: {os.path.basename(d['file_name'])}  ({args.weights})", path)
        written.append(path)
    logger.info(f"{len(written)} figure(s) written to {args.output}")
    return written


# ---------------------------------------------------------------- curves
CLASS_FRACTION = "mic/pseudo_class_fraction/"
AP50_KEY = re.compile(r"^(?:(teacher|student|burn_in)/)?(.+)/bbox/AP50$")
# One colour per dataset; teacher, student and the burn-in point told apart by line and marker.
MODEL_STYLES = {
    "teacher": dict(marker="o", linestyle="-"),
    "student": dict(marker="s", linestyle="--"),
    "burn_in": dict(marker="*", linestyle="none", markersize=12),
    None: dict(marker="o", linestyle="-"),
}


def read_metrics(path: str):
    """detectron2's metrics.json (one JSON object per line), sorted by iteration; a
    torn last line (a run still writing) is skipped."""
    if not os.path.isfile(path):
        fail(f"{path!r} does not exist: point --output-dir at a training OUTPUT_DIR")
    records = []
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and "iteration" in r:
                records.append(r)
    if not records:
        fail(f"{path!r} holds no metrics")
    return sorted(records, key=lambda r: r["iteration"])


def series(records, key):
    pts = [(r["iteration"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_lines(ax, records, lines, title, ylabel, empty_note):
    """lines: [(metrics key, label, matplotlib style kwargs)]."""
    ax.set_title(title)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    drawn = 0
    for key, label, style in lines:
        x, y = series(records, key)
        if x:
            style = dict({"marker": "." if len(x) < 30 else None}, **style)
            ax.plot(x, y, label=label, linewidth=1.2, **style)
            drawn += 1
    if drawn:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, empty_note, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="gray")


def run_class_names(output_dir: str):
    """The class names of a run, from the config.yaml detectron2 wrote into its
    OUTPUT_DIR; None when it is missing or no longer loads (the curves then say "class k")."""
    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    try:
        return class_names(load_config(path, []))
    except (SystemExit, Exception) as e:  # a curve picture must not fail on an old or foreign config
        logger.info(f"class names not read from {path} ({e}); the curves say 'class k'")
        return None


def class_label(names, k: int) -> str:
    return names[k] if names is not None and k < len(names) else f"class {k}"


def curves(args):
    records = read_metrics(os.path.join(args.output_dir, "metrics.json"))
    names = run_class_names(args.output_dir)
    keys = sorted({k for r in records for k in r})
    losses = [k for k in keys if k.startswith("loss_")]
    adapt = [k for k in losses if k.startswith(("loss_sada", "loss_mic"))]
    detection = [k for k in losses if k not in adapt]
    ap_lines, datasets = [], []
    for k in keys:
        m = AP50_KEY.match(k)
        if m:
            model, dataset = m.groups()
            if dataset not in datasets:
                datasets.append(dataset)
            style = dict(MODEL_STYLES[model], color=f"C{datasets.index(dataset) % 10}")
            ap_lines.append((k, f"{model} {dataset}" if model else dataset, style))

    fig, axes = plt.subplots(2, 3, figsize=(18, 8.5))
    plot_lines(axes[0, 0], records, [(k, k, {}) for k in detection], "detection losses (source)", "loss", "no detection loss")
    plot_lines(axes[0, 1], records, [(k, k, {}) for k in adapt], "adaptation losses (SADA, MIC)", "loss",
               "no SADA / MIC loss (source-only run?)")
    plot_lines(axes[0, 2], records, [("sada/img_acc", "image level", {}), ("sada/ins_acc", "instance level", {})],
               "SADA discriminators: domain accuracy (0.5 = aligned)", "accuracy", "no sada/*_acc (SADA off)")
    axes[0, 2].axhline(0.5, color="gray", linewidth=0.8, linestyle=":")
    no_mic = "no mic/pseudo_* (MIC off or still in burn-in)"
    plot_lines(axes[1, 0], records, [("mic/pseudo_boxes_per_image", "pseudo-boxes per target image", {})],
               "teacher pseudo-labels: how many", "boxes per image", no_mic)
    classes = sorted((k for k in keys if k.startswith(CLASS_FRACTION)), key=lambda k: int(k[len(CLASS_FRACTION):]))
    plot_lines(axes[1, 1], records,
               [("mic/pseudo_box_confidence", "mean confidence", {"color": "C3"}),
                ("mic/pseudo_box_area", "mean box area / image area", {"color": "C0"}),
                ("mic/pseudo_large_box_fraction", "boxes larger than half the image", {"color": "C1"})]
               + [(k, f"{class_label(names, int(k[len(CLASS_FRACTION):]))} share",
                   {"linestyle": ":", "color": f"C{4 + i % 6}"}) for i, k in enumerate(classes)],
               "teacher pseudo-labels: confidence, size, classes\n(confidence rising on boxes that fill the image: "
               "confirmation bias)", "fraction", no_mic)
    plot_lines(axes[1, 2], records, ap_lines, "AP50 (%)", "AP50", "no evaluation in metrics.json (TEST.EVAL_PERIOD 0?)")
    first, last = records[0]["iteration"], records[-1]["iteration"]
    margin = max(1, (last - first) * 0.03)
    for ax in axes.flat:
        ax.set_ylim(bottom=0)  # every figure here is >= 0
        ax.set_xlim(first - margin, last + margin)  # the same iterations in every panel
    fig.suptitle(f"{os.path.abspath(args.output_dir)}: iterations {first}..{last}")
    fig.tight_layout()
    out = args.out or os.path.join(args.output_dir, "curves.png")
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    logger.info(f"Curves written to {out}")
    return out


# ---------------------------------------------------------------- command line
def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("batch", help="image / masked image / pseudo-labels / predictions / ground truth")
    b.add_argument("--config", required=True, metavar="FILE", help="the training config")
    b.add_argument("--weights", required=True, metavar="FILE", help="a training checkpoint (student and teacher)")
    b.add_argument("--output", required=True, metavar="DIR")
    b.add_argument("--num-images", type=int, default=4)
    b.add_argument("--dataset", help="registered dataset (default: DATASETS.TRAIN_TARGET[0], else TEST[0])")
    b.add_argument("--score-threshold", type=float, default=0.5, help="for the student's predictions")
    b.add_argument("--seed", type=int, default=0, help="seed of the random masks")
    b.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    c = sub.add_parser("curves", help="losses, pseudo-labels and AP50 from OUTPUT_DIR/metrics.json")
    c.add_argument("--output-dir", required=True, metavar="RUN_DIR", help="a training OUTPUT_DIR")
    c.add_argument("--out", metavar="PNG", help="default: RUN_DIR/curves.png")
    return parser


def main(argv=None):
    args = argument_parser().parse_args(argv)
    setup_logger(name="mic_det")
    return batch(args) if args.command == "batch" else curves(args)


if __name__ == "__main__":
    main()
