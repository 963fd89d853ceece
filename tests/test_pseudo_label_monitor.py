"""The confirmation-bias warning (mic_det/engine/pseudo_label_monitor.py) on constructed
pseudo-label histories: it fires once, naming the iteration, when confidence rises while
most boxes cover more than half the image, and stays quiet otherwise."""
import logging
from types import SimpleNamespace

import pytest
from detectron2.utils.events import EventStorage

from mic_det.engine.pseudo_label_monitor import ConfirmationBiasMonitor


class Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_log():
    """The warnings of the mic_det logger, each once (it may also propagate to root)."""
    handler, logger = Messages(), logging.getLogger("mic_det")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def run(monitor, history):
    """history: per iteration (boxes per image, confidence, large-box fraction)."""
    with EventStorage(0) as storage:
        trainer = SimpleNamespace(storage=storage, iter=0)
        monitor.trainer = trainer
        for it, (count, conf, large) in enumerate(history):
            storage.iter = trainer.iter = it
            storage.put_scalars(**{"mic/pseudo_boxes_per_image": count, "mic/pseudo_box_confidence": conf,
                                   "mic/pseudo_large_box_fraction": large}, smoothing_hint=False)
            monitor.after_step()
    return monitor.warned_at


def drifting(n, large=0.9, start=0.85, end=0.99):
    return [(1.0, start + (end - start) * i / (n - 1), large) for i in range(n)]


def test_warns_once_with_the_iteration_when_confidence_rises_on_large_boxes(warnings_log):
    monitor = ConfirmationBiasMonitor(window=20)
    assert run(monitor, drifting(60)) == 19  # as soon as a full window shows it
    warned = [m for m in warnings_log if "confirmation bias" in m]
    assert len(warned) == 1 and warned[0].startswith("Iteration 19:")
    assert "TEACHER.BURN_IN_ITERS" in warned[0]


@pytest.mark.parametrize("history", [
    drifting(60, large=0.2),  # confidence rises, but the boxes are small: ordinary self-training
    drifting(60, start=0.95, end=0.95),  # large boxes at a steady confidence
    drifting(60, start=0.99, end=0.85),  # falling confidence
    drifting(15),  # shorter than the window
])
def test_quiet_without_the_whole_signature(history, warnings_log):
    assert run(ConfirmationBiasMonitor(window=20), history) is None
    assert not any("confirmation bias" in m for m in warnings_log)


def test_iterations_without_pseudo_boxes_are_not_counted():
    # every other step has no box (confidence logged as 0): the rise is read on the others only
    history = [h if i % 2 else (0.0, 0.0, 0.0) for i, h in enumerate(drifting(40))]
    assert run(ConfirmationBiasMonitor(window=20), history) == 39
    assert run(ConfirmationBiasMonitor(window=20), [(0.0, 0.0, 0.0)] * 40) is None


def test_window_is_checked():
    with pytest.raises(ValueError, match="window"):
        ConfirmationBiasMonitor(window=1)
