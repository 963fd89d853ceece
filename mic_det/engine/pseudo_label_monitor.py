"""A warning, once, when the teacher's pseudo-labels show the signature of confirmation
bias: under a large domain shift the teacher can settle on wrong boxes (often boxes that
cover most of the image, a hazy sky, a wall) and grow ever more confident in them, since
the student it follows is trained to agree. Target AP then stays low while every loss
looks healthy; only the pseudo-label statistics show it (see docs/method.md)."""
import logging
from collections import deque
from typing import Deque

from detectron2.engine import HookBase

logger = logging.getLogger("mic_det")

CONFIDENCE = "mic/pseudo_box_confidence"
LARGE = "mic/pseudo_large_box_fraction"
COUNT = "mic/pseudo_boxes_per_image"


class ConfirmationBiasMonitor(HookBase):
    """After each step, look at the last ``window`` iterations that produced pseudo-boxes:
    if their mean confidence rose by at least ``min_rise`` from the first half of the
    window to the second, and the fraction of boxes covering more than half of their
    image, averaged over the second half, exceeds ``large_fraction``, log a warning naming
    the iteration and what to try. Warns once per run. Reads only the step's own figures
    (a constant cost per step, however long the run)."""

    def __init__(self, window: int = 100, min_rise: float = 0.01, large_fraction: float = 0.5):
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window, self.min_rise, self.large_fraction = window, min_rise, large_fraction
        self.confidence: Deque[float] = deque(maxlen=window)
        self.large: Deque[float] = deque(maxlen=window)
        self.warned_at = None

    def check(self) -> bool:
        """Whether the last ``window`` iterations with pseudo-boxes show the signature."""
        if len(self.confidence) < self.window:
            return False
        half = self.window // 2
        conf, large = list(self.confidence), list(self.large)

        def mean(values):
            return sum(values) / len(values)

        rising = mean(conf[half:]) - mean(conf[:half]) >= self.min_rise
        return rising and mean(large[half:]) > self.large_fraction

    def after_step(self):
        if self.warned_at is not None:
            return
        latest = self.trainer.storage.latest()
        if any(k not in latest for k in (COUNT, CONFIDENCE, LARGE)):
            return  # MIC off, or still in burn-in
        count, iteration = latest[COUNT]
        if iteration != self.trainer.iter or count <= 0:
            return  # not this step's figures, or no pseudo-box this step
        self.confidence.append(float(latest[CONFIDENCE][0]))
        self.large.append(float(latest[LARGE][0]))
        if not self.check():
            return
        self.warned_at = self.trainer.iter
        logger.warning(
            f"Iteration {self.trainer.iter}: the teacher's pseudo-labels look like confirmation bias. Over the last "
            f"{self.window} iterations with pseudo-boxes their mean confidence kept rising while most of them cover "
            "more than half of the image (mic/pseudo_box_confidence, mic/pseudo_large_box_fraction; "
            "`tools/visualize.py curves` draws both). Self-training may be reinforcing wrong boxes. Check target "
            "AP on a labelled target set (TEST.EVAL_PERIOD) and try: a longer burn-in (TEACHER.BURN_IN_ITERS), "
            "a higher MIC.PSEUDO_LABEL_THRESHOLD, a ceiling on pseudo-box size (MIC.PSEUDO_LABEL_MAX_AREA), a "
            "slower teacher (TEACHER.EMA_ALPHA closer to 1) or a lower MIC.LOSS_WEIGHT."
        )
