#!/usr/bin/env python
"""Export the teacher or student of a training checkpoint as a stock detectron2 model.

    python tools/export_model.py --config CFG --weights OUTPUT_DIR/model_final.pth --output DIR \
        [--which auto|teacher|student] [--device cpu|cuda] [KEY VALUE ...]

Writes DIR/model.pth ({"model": state dict}, detector keys only: no SADA heads, no
teacher prefix), DIR/config.yaml (stock detectron2 keys only, META_ARCHITECTURE
GeneralizedRCNN, MODEL.WEIGHTS -> DIR/model.pth) and DIR/classes.json. Stock detectron2
then needs no mic_det:

    cfg = get_cfg(); cfg.merge_from_file("DIR/config.yaml"); predictor = DefaultPredictor(cfg)

`--which auto` (the default) exports the teacher when the checkpoint has one, else the
student.

`--torchscript` also writes DIR/model.ts, the detector traced with detectron2's
TracingAdapter (torch.jit.trace, CPU). It takes one (3, H, W) float32 image in
INPUT.FORMAT channel order, already resized as DefaultPredictor does (shortest edge
INPUT.MIN_SIZE_TEST, longest at most INPUT.MAX_SIZE_TEST), and returns (boxes x0 y0 x1 y1
in that resized frame, classes, scores, image size); any image size works. The trace is
made on a real image (`--sample-image`, default the first of DATASETS.TEST[0]) and checked
against the eager model on it.
"""
import argparse
import json
import logging
import os
import sys
import warnings

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from mic_det.config import load_config  # noqa: E402
from mic_det.checkpoint import build_detector, exportable_state_dict  # noqa: E402
from mic_det.inference import Predictor, class_names  # noqa: E402

logger = logging.getLogger("mic_det")

MIC_META_ARCHS = ("DomainAdaptiveRCNN",)


def stock_config(cfg: CfgNode, reference: CfgNode = None):
    """A copy of ``cfg`` without the keys a fresh ``get_cfg()`` lacks (those mic_det or
    any other extension added), so stock detectron2 can merge it. Returns (config,
    dropped key names)."""
    reference = reference if reference is not None else get_cfg()
    dropped = []

    def strip(node, ref, prefix):
        for key in list(node.keys()):
            if key not in ref:
                node.pop(key)
                dropped.append(prefix + key)
            elif isinstance(node[key], CfgNode) and isinstance(ref[key], CfgNode):
                strip(node[key], ref[key], prefix + key + ".")

    out = cfg.clone()
    out.defrost()
    strip(out, reference, "")
    return out, dropped


def sample_image(cfg, path=None) -> np.ndarray:
    """The BGR image to trace with: ``path``, else the first image of DATASETS.TEST[0]."""
    if path is None:
        if not cfg.DATASETS.TEST or cfg.DATASETS.TEST[0] not in DatasetCatalog.list():
            raise ValueError("--torchscript needs --sample-image: the config has no registered DATASETS.TEST")
        path = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]["file_name"]
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read sample image {path!r}")
    return image


def export_torchscript(model, cfg, image_bgr: np.ndarray, path: str):
    """Trace ``model`` (a stock GeneralizedRCNN, CPU, eval) on one image, check the
    trace reproduces it, save it to ``path``."""
    from detectron2.export import TracingAdapter

    tensor = Predictor(cfg, model).network_input(image_bgr)

    def inference(m, inputs):
        return [{"instances": m.inference(inputs, do_postprocess=False)[0]}]

    adapter = TracingAdapter(model, [{"image": tensor}], inference)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about every Python-side check it bakes in
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)  # checked below
        expected, got = adapter(tensor), traced(tensor)
    if not all(a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-3) for a, b in zip(expected, got)):
        raise RuntimeError("the traced model does not reproduce the eager model on the sample image")
    if len(expected[0]) == 0:
        logger.warning("the sample image has no detection: the trace may not handle images that have some")
    traced.save(path)
    logger.info(f"TorchScript model written to {path}")


def export(cfg, weights: str, output: str, which: str = "auto", device: str = None, source: str = "",
           torchscript: bool = False, sample: str = None):
    """Write DIR/model.pth, DIR/config.yaml and DIR/classes.json (and DIR/model.ts);
    return the exported config. The export is checked by loading it, strictly, into a
    stock GeneralizedRCNN."""
    model, which = build_detector(cfg, weights, which)
    state = exportable_state_dict(model)
    names = class_names(cfg)

    out_cfg, dropped = stock_config(cfg)
    arch = out_cfg.MODEL.META_ARCHITECTURE
    if arch in MIC_META_ARCHS:
        out_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    elif arch != "GeneralizedRCNN":
        logger.warning(f"MODEL.META_ARCHITECTURE {arch!r} is kept: stock detectron2 can build it only if it is registered there")
    os.makedirs(output, exist_ok=True)
    model_path = os.path.abspath(os.path.join(output, "model.pth"))
    out_cfg.MODEL.WEIGHTS = model_path
    if device:
        out_cfg.MODEL.DEVICE = device

    # The stock architecture must take these weights as they are (checked before writing them).
    stock = build_model(_cpu(out_cfg))
    stock.load_state_dict(state, strict=True)
    stock.eval()
    if torchscript:
        export_torchscript(stock, out_cfg, sample_image(cfg, sample), os.path.join(output, "model.ts"))
    del stock

    torch.save({"model": state}, model_path)
    header = [
        f"# Exported by mic_det tools/export_model.py: the {which} of {weights}" + (f", config {source}" if source else ""),
        "# Stock detectron2 loads it: cfg = get_cfg(); cfg.merge_from_file(<this file>); DefaultPredictor(cfg)",
        "# MODEL.WEIGHTS is an absolute path: set it again if this folder moves.",
        f"# thing_classes (class id 0..{len(names) - 1}): {json.dumps(names)}",
        f"# mic_det keys left out: {', '.join(dropped) if dropped else 'none'}",
    ]
    with open(os.path.join(output, "config.yaml"), "w") as f:
        f.write("\n".join(header) + "\n" + out_cfg.dump())
    with open(os.path.join(output, "classes.json"), "w") as f:
        json.dump({"thing_classes": names, "which": which, "weights": os.path.abspath(weights)}, f, indent=2)
    logger.info(f"Exported the {which} of {weights} to {output} (model.pth, config.yaml, classes.json)")
    return out_cfg


def _cpu(cfg):
    c = cfg.clone()
    c.MODEL.DEVICE = "cpu"
    return c


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, metavar="FILE", help="the training config")
    parser.add_argument("--weights", required=True, metavar="FILE", help="a training checkpoint (model_final.pth, ...)")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--which", choices=("auto", "teacher", "student"), default="auto",
                        help="network to export (auto: the teacher when the checkpoint has one)")
    parser.add_argument("--device", default=None,
                        help="MODEL.DEVICE written to the exported config (default: the config's, cpu without CUDA here)")
    parser.add_argument("--torchscript", action="store_true", help="also write DIR/model.ts (traced, CPU)")
    parser.add_argument("--sample-image", metavar="FILE", help="image to trace with (default: first of DATASETS.TEST[0])")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser


def main(argv=None):
    args = argument_parser().parse_args(argv)
    setup_logger(name="mic_det")
    cfg = load_config(args.config, args.opts)
    try:
        return export(cfg, args.weights, args.output, args.which, args.device, source=args.config,
                      torchscript=args.torchscript, sample=args.sample_image)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
