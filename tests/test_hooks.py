"""The training hooks on their own: settings checked, burn-in hands over once, and the
preemption hook's signal handling, its checkpoint and its agreement across ranks."""
import logging
import multiprocessing
import signal
import threading
from types import SimpleNamespace

import pytest
import torch

from mic_det.engine.hooks import PreemptionHook, TeacherHook


@pytest.fixture
def hook_log(caplog):
    """Records of mic_det.engine.hooks (the mic_det logger may not propagate)."""
    logger = logging.getLogger("mic_det.engine.hooks")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="mic_det.engine.hooks")
    yield caplog
    logger.removeHandler(caplog.handler)


def test_teacher_settings_are_checked():
    for alpha in (0.0, 0.5, 1.0):
        TeacherHook(None, None, alpha, period=1, burn_in_iters=0)
    for alpha in (-0.1, 1.01, 2.0):
        with pytest.raises(ValueError, match=rf"TEACHER.EMA_ALPHA.*{alpha}"):
            TeacherHook(None, None, alpha, period=1, burn_in_iters=0)
    with pytest.raises(ValueError, match="TEACHER.UPDATE_PERIOD.*0"):
        TeacherHook(None, None, 0.9, period=0, burn_in_iters=0)


def run_schedule(hook, iterations):
    for it in range(iterations):
        hook.trainer = SimpleNamespace(iter=it)
        hook.after_step()


def recording_teacher(events):
    return SimpleNamespace(copy_from=lambda s: events.append(("copy", s)),
                           update=lambda s, alpha: events.append(("update", s, alpha)))


def test_burn_in_hands_over_once_at_its_last_iteration_then_ema_every_period(hook_log):
    events = []
    hook = TeacherHook(recording_teacher(events), lambda: "student", 0.9, period=2, burn_in_iters=3,
                       evaluate_fn=lambda: events.append(("evaluate",)))
    assert [hook.mic_active(it) for it in range(5)] == [False, False, False, True, True]
    run_schedule(hook, 8)  # burn-in: iterations 0-2; MIC: 3-7, updates after 4 and 6
    assert events == [("copy", "student"), ("evaluate",), ("update", "student", 0.9), ("update", "student", 0.9)]
    assert "Burn-in finished after 3 iterations" in hook_log.text


def test_without_burn_in_the_teacher_follows_from_the_first_step():
    events = []
    hook = TeacherHook(recording_teacher(events), lambda: "student", 0.5, period=1, burn_in_iters=0)
    assert hook.mic_active(0)
    run_schedule(hook, 3)
    assert events == [("update", "student", 0.5)] * 3  # no hand-over, no evaluation


def test_burn_in_without_evaluation():
    events = []
    hook = TeacherHook(recording_teacher(events), lambda: "student", 0.9, period=1, burn_in_iters=1)
    run_schedule(hook, 1)
    assert events == [("copy", "student")]


def test_signals_set_the_flag_and_a_second_ctrl_c_interrupts(hook_log):
    hook = PreemptionHook(checkpointer=None)
    hook._handle(signal.SIGINT, None)
    assert hook.received == signal.SIGINT and "Received SIGINT" in hook_log.text
    with pytest.raises(KeyboardInterrupt):
        hook._handle(signal.SIGINT, None)
    hook = PreemptionHook(checkpointer=None)
    hook._handle(signal.SIGTERM, None)
    hook._handle(signal.SIGTERM, None)  # a second SIGTERM only repeats the request
    assert hook.received == signal.SIGTERM


def test_handlers_installed_in_the_main_thread_only_and_restored():
    before = signal.getsignal(signal.SIGTERM)
    hook = PreemptionHook(checkpointer=None)
    hook.before_train()
    assert signal.getsignal(signal.SIGTERM) == hook._handle and signal.getsignal(signal.SIGINT) == hook._handle
    hook.after_train()
    assert signal.getsignal(signal.SIGTERM) == before
    other = PreemptionHook(checkpointer=None)
    errors = []
    thread = threading.Thread(target=lambda: errors.append(None) if other.before_train() is None else None)
    thread.start()
    thread.join()
    assert errors == [None] and other._previous == {}  # signal.signal would raise off the main thread
    assert signal.getsignal(signal.SIGTERM) == before


def test_stop_saves_a_checkpoint_and_exits_with_the_signal(hook_log):
    saved = []
    hook = PreemptionHook(checkpointer=SimpleNamespace(save=lambda name, **kw: saved.append((name, kw))))
    hook.trainer = SimpleNamespace(iter=5)
    hook.after_step()  # nothing received: nothing happens
    assert saved == []
    hook.received = signal.SIGTERM
    with pytest.raises(SystemExit) as e:
        hook.after_step()
    assert e.value.code == 128 + signal.SIGTERM
    assert saved == [("model_0000005", {"iteration": 5})]
    assert "Stopped after iteration 5" in hook_log.text


def _rank(rank, path, received, queue):
    torch.distributed.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    hook = PreemptionHook(checkpointer=None)
    hook.received = received
    queue.put((rank, hook._stop_requested()))
    torch.distributed.destroy_process_group()


def test_a_signal_on_one_rank_stops_every_rank(tmp_path):
    ctx = multiprocessing.get_context("fork")  # the children run this process's code as it is
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, tmp_path / "store", signal.SIGTERM if r == 1 else None, queue))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert sorted(queue.get(timeout=10) for _ in procs) == [(0, signal.SIGTERM), (1, signal.SIGTERM)]
    # one process: its own flag, nothing to agree with (also ties this test to
    # _stop_requested for mutation testing, which traces calls in this process only)
    alone = PreemptionHook(checkpointer=None)
    assert alone._stop_requested() == 0
    alone.received = signal.SIGINT
    assert alone._stop_requested() == signal.SIGINT
