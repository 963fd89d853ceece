"""Hooks of domain-adaptive training: the EMA teacher update and the end of burn-in."""
import logging

from detectron2.engine import HookBase

logger = logging.getLogger(__name__)


class EMATeacherHook(HookBase):
    """After each optimizer step (from the end of burn-in on, every ``period`` steps):
    ``teacher = alpha * teacher + (1 - alpha) * student``."""

    def __init__(self, teacher, student_fn, alpha: float, period: int = 1, start_iter: int = 0):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"TEACHER.EMA_ALPHA must be in [0, 1], got {alpha}")
        if period < 1:
            raise ValueError(f"TEACHER.UPDATE_PERIOD must be >= 1, got {period}")
        self.teacher = teacher
        self.student_fn = student_fn
        self.alpha = alpha
        self.period = period
        self.start_iter = start_iter

    def after_step(self):
        it = self.trainer.iter
        if it >= self.start_iter and (it + 1 - self.start_iter) % self.period == 0:
            self.teacher.update(self.student_fn(), self.alpha)


class BurnInHook(HookBase):
    """When burn-in ends (after iteration ``burn_in_iters - 1``), re-initialise the
    teacher from the student and evaluate that starting point once."""

    def __init__(self, teacher, student_fn, burn_in_iters: int, evaluate_fn=None):
        self.teacher = teacher
        self.student_fn = student_fn
        self.burn_in_iters = burn_in_iters
        self.evaluate_fn = evaluate_fn

    def after_step(self):
        if self.trainer.iter + 1 != self.burn_in_iters:
            return
        logger.info(f"Burn-in finished after {self.burn_in_iters} iterations: teacher <- student")
        self.teacher.copy_from(self.student_fn())
        if self.evaluate_fn is not None:
            self.evaluate_fn()
