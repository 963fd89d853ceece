"""DomainAdaptiveTrainer: detectron2's DefaultTrainer with a paired source/target
loader, an EMA teacher (saved in every checkpoint), SADA and MIC losses, evaluation of
student and/or teacher, a best checkpoint and results.json."""
import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import AtomicCheckpointer, check_weights_path
from ..config import check_config
from ..data.loaders import build_source_loader, build_target_loader, build_test_loader
from ..data.stream import PairedDataLoader
from ..evaluation import DomainAdaptationCOCOEvaluator, format_ap50_table, write_results_json
from ..modeling.dynamic_threshold import DynamicThreshold
from ..modeling.pseudo_labels import PseudoLabeler
from ..modeling.teacher import EMATeacher
from .hooks import PreemptionHook, TeacherHook
from .pseudo_label_monitor import ConfirmationBiasMonitor
from .selective_retraining import SelectiveRetrainingHook, select_state
from .train_step import DomainAdaptiveStep

logger = logging.getLogger("mic_det")

def unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


class DomainAdaptiveTrainer(DefaultTrainer):
    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logger.isEnabledFor(logging.INFO):
            setup_logger(name="mic_det")
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        check_config(cfg)

        # One seed for the data order and every per-step draw; saved in checkpoints.
        self.seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg, seed=self.seed)
        # detectron2 passes device_ids=[local rank], which is wrong for CPU processes.
        ddp_kwargs = {} if model.device.type == "cuda" else {"device_ids": None}
        model = create_ddp_model(model, broadcast_buffers=False, **ddp_kwargs)

        self.teacher = EMATeacher(unwrap(model)) if cfg.MIC.ENABLED else None
        self.teacher_hook = None
        if self.teacher is not None:
            self.teacher_hook = TeacherHook(
                self.teacher, lambda: self.student, cfg.TEACHER.EMA_ALPHA, cfg.TEACHER.UPDATE_PERIOD,
                cfg.TEACHER.BURN_IN_ITERS, self._evaluate_burn_in,
            )
        self.dynamic_threshold = None
        if cfg.MIC.ENABLED and cfg.MRT.DYNAMIC_THRESHOLD.ENABLED:
            self.dynamic_threshold = DynamicThreshold.from_config(cfg).to(unwrap(model).device)
        amp_dtype = None
        if cfg.SOLVER.AMP.ENABLED:
            amp_dtype = getattr(torch, cfg.SOLVER.AMP.PRECISION)
        self._trainer = DomainAdaptiveStep(
            model,
            data_loader,
            optimizer,
            teacher=self.teacher,
            mic_active=self.teacher_hook.mic_active if self.teacher_hook is not None else lambda it: False,
            pseudo_labeler=PseudoLabeler.from_config(cfg),
            amp_dtype=amp_dtype,
            seed=self.seed,
            dynamic_threshold=self.dynamic_threshold,
            teacher_features=(
                list(cfg.MRT.MASKED_RECONSTRUCTION.IN_FEATURES)
                if cfg.MIC.ENABLED and cfg.MRT.MASKED_RECONSTRUCTION.ENABLED else []
            ),
        )
        self.selective_retraining = None
        if cfg.MIC.ENABLED and cfg.MRT.SELECTIVE_RETRAINING.ENABLED:
            sr = cfg.MRT.SELECTIVE_RETRAINING
            self.selective_retraining = SelectiveRetrainingHook(
                lambda: self.student, sr.MODULES, sr.PERIOD, cfg.TEACHER.BURN_IN_ITERS
            )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        extra = {"teacher": self.teacher} if self.teacher is not None else {}
        if self.dynamic_threshold is not None:
            extra["dynamic_threshold"] = self.dynamic_threshold
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), **extra)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @staticmethod
    def auto_scale_workers(cfg, num_workers: int):
        """detectron2's (SOLVER.REFERENCE_WORLD_SIZE: batch and LR scale with the number
        of processes, the schedule shrinks), with the target batch scaled like the source
        batch, the burn-in and MRT's reset period shortened like the schedule."""
        old_world = cfg.SOLVER.REFERENCE_WORLD_SIZE
        scaled = DefaultTrainer.auto_scale_workers(cfg, num_workers)
        if old_world == 0 or old_world == num_workers:
            return scaled
        target = cfg.SOLVER.IMS_PER_BATCH_TARGET
        if target % old_world != 0:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH_TARGET ({target}) must be a multiple of SOLVER.REFERENCE_WORLD_SIZE ({old_world})."
            )
        frozen = scaled.is_frozen()
        scaled.defrost()
        scaled.SOLVER.IMS_PER_BATCH_TARGET = target // old_world * num_workers
        scaled.TEACHER.BURN_IN_ITERS = int(round(cfg.TEACHER.BURN_IN_ITERS * old_world / num_workers))
        period = cfg.MRT.SELECTIVE_RETRAINING.PERIOD
        scaled.MRT.SELECTIVE_RETRAINING.PERIOD = max(int(round(period * old_world / num_workers)), 1)
        if frozen:
            scaled.freeze()
        return scaled

    # ---- building blocks ---------------------------------------------------------------
    @classmethod
    def build_train_loader(cls, cfg, seed: int = 0):
        source = build_source_loader(cfg, seed)
        if not cfg.DATASETS.TRAIN_TARGET:
            return source
        return PairedDataLoader(source, build_target_loader(cfg, seed))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return DomainAdaptationCOCOEvaluator(dataset_name, output_dir=output_folder,
                                             score_threshold=cfg.MIC.PSEUDO_LABEL_THRESHOLD)

    @property
    def student(self):
        return unwrap(self.model)

    def models_to_evaluate(self):
        which = self.cfg.TEST.EVAL_MODEL
        models = OrderedDict()
        if which in ("teacher", "both"):
            models["teacher"] = self.teacher.model
        if which in ("student", "both"):
            models["student"] = self.model
        return models

    @classmethod
    def evaluate(cls, cfg, models):
        """Evaluate each of ``models`` ({name: model}) on every DATASETS.TEST.

        Returns results keyed by dataset name, or ``<model name>/<dataset>`` when more
        than one model is evaluated (the results.json layout)."""
        results = OrderedDict()
        for model_name, model in models.items():
            for dataset_name in cfg.DATASETS.TEST:
                key = dataset_name if len(models) == 1 else f"{model_name}/{dataset_name}"
                loader = cls.build_test_loader(cfg, dataset_name)
                folder = os.path.join(cfg.OUTPUT_DIR, "inference", model_name, dataset_name)
                evaluator = cls.build_evaluator(cfg, dataset_name, folder)
                res = inference_on_dataset(model, loader, evaluator)
                results[key] = res
                if comm.is_main_process():
                    logger.info(f"Evaluation of the {model_name} on {dataset_name}:")
                    print_csv_format(res)
        if comm.is_main_process() and results:
            logger.info("Summary (bbox):\n" + format_ap50_table(results))
        return results

    def build_hooks(self):
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if self.teacher_hook is not None:
            ret.append(self.teacher_hook)
            ret.append(ConfirmationBiasMonitor())
        if self.selective_retraining is not None:
            # before the checkpointers: a checkpoint of step i holds the weights it remembered
            # or reset after step i
            ret.append(self.selective_retraining)
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            self._last_eval_results = self.evaluate(cfg, self.models_to_evaluate())
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        metric = cfg.TEST.BEST_CHECKPOINT_METRIC
        if metric and cfg.DATASETS.TEST and comm.is_main_process():
            models = self.models_to_evaluate()
            prefix = "" if len(models) == 1 else f"{next(iter(models))}/"
            ret.append(
                hooks.BestCheckpointer(
                    cfg.TEST.EVAL_PERIOD, self.checkpointer, f"{prefix}{cfg.DATASETS.TEST[0]}/{metric}", "max"
                )
            )
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20))
        # Last: a checkpoint written on SIGTERM / Ctrl-C holds the state after every other
        # hook of that step (the teacher's update, the copy at the end of burn-in), so a
        # resumed run continues exactly as an uninterrupted one.
        ret.append(PreemptionHook(self.checkpointer))
        return ret

    def _evaluate_burn_in(self):
        """Evaluate the student as it is when burn-in ends: the pre-MIC starting point."""
        if not self.cfg.DATASETS.TEST:
            return
        res = self.evaluate(self.cfg, OrderedDict(student=self.model))
        self._burn_in_results = OrderedDict((f"burn_in/{k.split('/')[-1]}", v) for k, v in res.items())
        if comm.is_main_process():
            storage = get_event_storage()
            for key, v in self._burn_in_results.items():
                storage.put_scalar(f"{key}/bbox/AP50", v["bbox"]["AP50"], smoothing_hint=False)

    # ---- checkpoints ---------------------------------------------------------------------
    def resume_or_load(self, resume=True):
        """Resume student, teacher, optimizer, scheduler and iteration from the last
        checkpoint in OUTPUT_DIR, or start from MODEL.WEIGHTS (student only; the teacher
        then starts as a copy of the student).

        MODEL.WEIGHTS that do not exist, or do not fit the model (another architecture,
        a random state dict), are errors naming the file: detectron2 would only warn
        and train from mostly random weights (see ``check_weights_fit``)."""
        if self.teacher is not None:
            self.teacher.restored = False
        if comm.is_main_process() and not (resume and self.checkpointer.has_checkpoint()):
            # main only: detectron2 loads on the processes that see the file and
            # broadcasts from the main one
            check_weights_path(self.cfg.MODEL.WEIGHTS)
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        self.checkpointer.check_last_load()
        resumed = resume and self.checkpointer.has_checkpoint()
        if self.selective_retraining is not None and not resumed and self.cfg.TEACHER.BURN_IN_ITERS == 0:
            self._check_weights_to_reset_to()
        if resumed:
            self.start_iter = self.iter + 1
        # the data streams start where the run stopped: batch number = iteration
        self._trainer.data_loader.set_start(self.start_iter)
        if self.teacher is not None and not (resumed and self.teacher.restored):
            if resumed:
                logger.warning("The checkpoint has no teacher: starting the teacher from the student.")
            self.teacher.copy_from(self.student)

    def _check_weights_to_reset_to(self):
        """Without burn-in, selective retraining resets to MODEL.WEIGHTS: they must hold
        every weight it resets (a source-trained detector), not ImageNet weights with a
        random FPN."""
        reset = set(select_state(self.student, self.cfg.MRT.SELECTIVE_RETRAINING.MODULES))
        last = self.checkpointer.last_load
        missing = sorted(reset & set(last[1].missing_keys)) if last is not None else sorted(reset)
        if missing:
            raise ValueError(
                f"MRT.SELECTIVE_RETRAINING with TEACHER.BURN_IN_ITERS 0 resets "
                f"{list(self.cfg.MRT.SELECTIVE_RETRAINING.MODULES)} to MODEL.WEIGHTS "
                f"({self.cfg.MODEL.WEIGHTS!r}), which lack {len(missing)} of those weights (e.g. {missing[:3]}): "
                "they would go back to random or ImageNet values. Set TEACHER.BURN_IN_ITERS > 0 "
                "(resets then return to the end of burn-in) or start from a source-trained detector."
            )

    def state_dict(self):
        ret = super().state_dict()
        ret["seed"] = self.seed
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "seed" in state_dict and state_dict["seed"] != self.seed:
            # a run started with SEED < 0 drew its seed at random: keep that one
            self.seed = self._trainer.seed = int(state_dict["seed"])
            self._trainer.data_loader = self.build_train_loader(self.cfg, seed=self.seed)

    def train(self):
        super().train()
        results = OrderedDict(getattr(self, "_last_eval_results", None) or {})
        results.update(getattr(self, "_burn_in_results", None) or {})
        if comm.is_main_process() and results:
            path = write_results_json(results, self.cfg.OUTPUT_DIR)
            logger.info(f"Final results written to {path}")
        return results
