#!/usr/bin/env python
"""Train or evaluate a domain-adaptive detector (source-only, SADA, MIC).

    python tools/train_net.py --config configs/cs2foggy_mic.yaml [--num-gpus N] [KEY VALUE ...]
    python tools/train_net.py --config configs/cs2foggy_mic.yaml --eval-only MODEL.WEIGHTS out/model_final.pth
"""
import argparse
import logging
import os
import sys
import tempfile
from collections import OrderedDict

import torch
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mic_det import add_mic_config  # noqa: E402
from mic_det.data import register_custom_datasets  # noqa: E402
from mic_det.engine import DomainAdaptiveTrainer  # noqa: E402
from mic_det.engine.checkpoint import AtomicCheckpointer, check_weights_path  # noqa: E402
from mic_det.engine.trainer import check_config  # noqa: E402
from mic_det.evaluation import write_results_json  # noqa: E402
from mic_det.modeling import EMATeacher  # noqa: E402

logger = logging.getLogger("mic_det")


def load_config(config_file, opts):
    """get_cfg() + mic_det keys + the YAML file + command-line overrides, with errors
    that name the file and the key."""
    cfg = get_cfg()
    add_mic_config(cfg)
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
    # datasets declared under DATASETS.CUSTOM; every process (and every tool) loads its
    # config through here, so each registers them
    register_custom_datasets(cfg)
    return cfg


def check_output_dir(path):
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


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    check_output_dir(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mic_det")
    return cfg


def evaluate_only(cfg):
    model = DomainAdaptiveTrainer.build_model(cfg)
    models = OrderedDict()
    teacher = EMATeacher(model) if cfg.TEST.EVAL_MODEL != "student" else None
    extra = {"teacher": teacher} if teacher is not None else {}
    checkpointer = AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR, **extra)
    try:
        # a missing file, or weights that leave any layer random (detectron2 only warns)
        check_weights_path(cfg.MODEL.WEIGHTS)
        checkpointer.load(cfg.MODEL.WEIGHTS, checkpointables=list(extra))
        checkpointer.check_last_load(strict=True)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    if teacher is not None:
        if not teacher.restored:
            raise SystemExit(
                f"error: {cfg.MODEL.WEIGHTS} holds no teacher; evaluate the student with "
                "TEST.EVAL_MODEL student"
            )
        models["teacher"] = teacher.model
    if cfg.TEST.EVAL_MODEL in ("student", "both"):
        models["student"] = model
    results = DomainAdaptiveTrainer.evaluate(cfg, models)
    if comm.is_main_process():
        write_results_json(results, cfg.OUTPUT_DIR)
    return results


def main(args):
    cfg = setup(args)
    if args.eval_only:
        check_config(cfg)
        if not cfg.MODEL.WEIGHTS:
            raise SystemExit("error: --eval-only needs MODEL.WEIGHTS (a checkpoint file)")
        return evaluate_only(cfg)
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    parser = default_argument_parser()
    # `--config` is the documented name; `--config-file` (detectron2's) still works.
    parser.add_argument("--config", dest="config_file", default=argparse.SUPPRESS, metavar="FILE")
    return parser


if __name__ == "__main__":
    args = argument_parser().parse_args()
    if not args.config_file:
        raise SystemExit("error: --config FILE is required")
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
