"""Hooks of domain-adaptive training: the teacher's schedule (burn-in, then EMA updates)
and the checkpoint on SIGTERM / Ctrl-C."""
import logging
import signal
import threading

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

logger = logging.getLogger(__name__)


class TeacherHook(HookBase):
    """The teacher's schedule, in one place. For the first ``burn_in_iters`` iterations
    the student trains without MIC and the teacher waits; after the last of them the
    teacher is re-initialised from the student (and that starting point is evaluated
    once). From then on, after every ``period``-th step:
    ``teacher = alpha * teacher + (1 - alpha) * student``. The training step asks
    :meth:`mic_active` whether MIC runs at an iteration."""

    def __init__(self, teacher, student_fn, alpha: float, period: int, burn_in_iters: int, evaluate_fn=None):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"TEACHER.EMA_ALPHA must be in [0, 1], got {alpha}")
        if period < 1:
            raise ValueError(f"TEACHER.UPDATE_PERIOD must be >= 1, got {period}")
        self.teacher = teacher
        self.student_fn = student_fn
        self.alpha = alpha
        self.period = period
        self.burn_in_iters = burn_in_iters
        self.evaluate_fn = evaluate_fn

    def mic_active(self, iteration: int) -> bool:
        return iteration >= self.burn_in_iters

    def after_step(self):
        it = self.trainer.iter
        if it + 1 == self.burn_in_iters:
            logger.info(f"Burn-in finished after {self.burn_in_iters} iterations: teacher <- student")
            self.teacher.copy_from(self.student_fn())
            if self.evaluate_fn is not None:
                self.evaluate_fn()
        elif self.mic_active(it) and (it + 1 - self.burn_in_iters) % self.period == 0:
            self.teacher.update(self.student_fn(), self.alpha)


class PreemptionHook(HookBase):
    """On SIGTERM or Ctrl-C (SIGINT), finish the current iteration, save a checkpoint
    (``--resume`` continues from it) and exit with status 128 + signal number.

    With several processes the stop flag is all-reduced every step, so all ranks stop
    after the same iteration even if only one of them received the signal. A second
    Ctrl-C interrupts at once.
    """

    def __init__(self, checkpointer, signals=(signal.SIGTERM, signal.SIGINT)):
        self.checkpointer = checkpointer
        self.signals = signals
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        logger.warning(f"Received {signal.Signals(signum).name}: saving a checkpoint after this iteration.")

    def before_train(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)

    def after_train(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _stop_requested(self) -> int:
        flag = torch.tensor([self.received or 0])
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def after_step(self):
        signum = self._stop_requested()
        if not signum:
            return
        it = self.trainer.iter
        if comm.is_main_process():
            self.checkpointer.save(f"model_{it:07d}", iteration=it)
        comm.synchronize()
        logger.warning(f"Stopped after iteration {it}; resume with --resume.")
        raise SystemExit(128 + signum)
