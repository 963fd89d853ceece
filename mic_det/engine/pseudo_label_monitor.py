"""A warning, once, when the teacher's pseudo-labels show the signature of confirmation
bias: under a large domain shift the teacher can settle on wrong boxes (often boxes that
cover most of the image, a hazy sky, a wall) and grow ever more confident in them, since
the student it follows is trained to agree. Target AP then stays low while every loss
looks healthy; only the pseudo-label statistics show it (see docs/method.md)."""
import logging
from typing import Dict, List

from detectron2.engine import HookBase

logger = logging.getLogger("mic_det")

CONFIDENCE = "mic/pseudo_box_confidence"
LARGE = "mic/pseudo_large_box_fraction"
COUNT = "mic/pseudo_boxes_per_image"


class ConfirmationBiasMonitor(HookBase):
    """After each step, look at the last ``window`` iterations that produced pseudo-boxes:
    if their mean confidence rose by at least ``min_rise`` from the first half of the
    window to the second, and in the second half more than ``large_fraction`` of the
    boxes covered more than half of their image, log a warning naming the iteration and
    what to try. Warns once per run."""

    def __init__(self, window: int = 100, min_rise: float = 0.01, large_fraction: float = 0.5):
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window, self.min_rise, self.large_fraction = window, min_rise, large_fraction
        self.warned_at = None

    @staticmethod
    def _by_iteration(storage, key) -> Dict[int, float]:
        if key not in storage.histories():
            return {}
        return {int(it): float(v) for v, it in storage.history(key).values()}

    def check(self, storage) -> bool:
        """Whether the last ``window`` iterations with pseudo-boxes show the signature."""
        counts = self._by_iteration(storage, COUNT)
        confidence, large = self._by_iteration(storage, CONFIDENCE), self._by_iteration(storage, LARGE)
        its: List[int] = sorted(it for it, c in counts.items() if c > 0 and it in confidence and it in large)
        its = its[-self.window:]
        if len(its) < self.window:
            return False
        half = self.window // 2
        first, second = its[:half], its[half:]

        def mean(values):
            return sum(values) / len(values)

        rising = mean([confidence[i] for i in second]) - mean([confidence[i] for i in first]) >= self.min_rise
        mostly_large = mean([large[i] for i in second]) > self.large_fraction
        return rising and mostly_large

    def after_step(self):
        if self.warned_at is not None or not self.check(self.trainer.storage):
            return
        self.warned_at = self.trainer.iter
        logger.warning(
            f"Iteration {self.trainer.iter}: the teacher's pseudo-labels look like confirmation bias. Over the last "
            f"{self.window} iterations with pseudo-boxes their mean confidence kept rising while most of them cover "
            "more than half of the image (mic/pseudo_box_confidence, mic/pseudo_large_box_fraction; "
            "`tools/visualize.py curves` draws both). Self-training may be reinforcing wrong boxes. Check target "
            "AP on a labelled target set (TEST.EVAL_PERIOD) and try: a longer burn-in (TEACHER.BURN_IN_ITERS), "
            "a higher MIC.PSEUDO_LABEL_THRESHOLD, a slower teacher (TEACHER.EMA_ALPHA closer to 1) or a lower "
            "MIC.LOSS_WEIGHT."
        )
