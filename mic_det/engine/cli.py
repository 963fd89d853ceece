"""The train / evaluate command behind ``tools/train_net.py`` (and ``tools/demo.py``):
detectron2's argument parser, setup of one process, and what that process runs.
Kept in the package so that tools compose it instead of importing each other."""
import argparse
import logging
from collections import OrderedDict

from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import AtomicCheckpointer, check_weights_path
from ..config import check_config, check_output_dir, load_config
from ..evaluation import write_results_json
from ..modeling.teacher import EMATeacher
from .trainer import DomainAdaptiveTrainer

logger = logging.getLogger("mic_det")


def argument_parser() -> argparse.ArgumentParser:
    parser = default_argument_parser()
    # `--config` is the documented name; `--config-file` (detectron2's) still works.
    parser.add_argument("--config", dest="config_file", default=argparse.SUPPRESS, metavar="FILE")
    return parser


def setup(args):
    """The frozen config of this process, its output folder checked, logging set up."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    check_output_dir(cfg.OUTPUT_DIR)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mic_det")
    return cfg


def evaluate_checkpoint(cfg):
    """Evaluate MODEL.WEIGHTS (its teacher, student or both, as TEST.EVAL_MODEL says) on
    DATASETS.TEST and write results.json. A checkpoint that does not fit the model, or
    lacks the teacher asked for, is an error naming the file."""
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
    """One process of ``train_net.py``: train (or resume), or with --eval-only evaluate."""
    cfg = setup(args)
    if args.eval_only:
        check_config(cfg)
        if not cfg.MODEL.WEIGHTS:
            raise SystemExit("error: --eval-only needs MODEL.WEIGHTS (a checkpoint file)")
        return evaluate_checkpoint(cfg)
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
