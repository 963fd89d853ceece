"""Two processes on CPU (GLOO) through detectron2's launch, as --num-gpus 2 runs them."""
import pytest
import torch
from detectron2.engine import launch

from conftest import tiny_cfg
from distributed_worker import train_and_dump_teacher


@pytest.mark.parametrize("mrt", [False, True], ids=["mic", "mic+mrt"])
def test_ranks_hold_identical_teachers(mrt, tool_env, tmp_path, monkeypatch):
    """With MRT's three options on, the ranks also agree: thresholds from statistics
    summed over both, resets at the same step from identical copies."""
    monkeypatch.setenv("DETECTRON2_DATASETS", tool_env["DETECTRON2_DATASETS"])
    cfg = tiny_cfg(sada=True, mic=True)
    if mrt:
        cfg.TEACHER.BURN_IN_ITERS = 1
        cfg.MRT.DYNAMIC_THRESHOLD.ENABLED = True
        cfg.MRT.SELECTIVE_RETRAINING.ENABLED = True
        cfg.MRT.SELECTIVE_RETRAINING.PERIOD = 1
        cfg.MRT.MASKED_RECONSTRUCTION.ENABLED = True
    cfg.DATASETS.TRAIN = ("synthetic_clear_train",)
    cfg.DATASETS.TRAIN_TARGET = ("synthetic_foggy_train",)
    cfg.DATASETS.TEST = ()
    cfg.MIC.PSEUDO_LABEL_THRESHOLD = 0.0
    cfg.SOLVER.MAX_ITER = 3
    cfg.SOLVER.BASE_LR = 0.001
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.IMS_PER_BATCH_TARGET = 2
    cfg.SEED = 3
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.dump())
    launch(train_and_dump_teacher, 2, dist_url="auto", args=(str(path), str(tmp_path)))
    t0 = torch.load(tmp_path / "teacher_rank0.pth", weights_only=False)
    t1 = torch.load(tmp_path / "teacher_rank1.pth", weights_only=False)
    # the ranks saw different images and labelled different targets, yet the teachers
    # agree: the students are kept equal by DDP and the teachers follow them
    for k in t0:
        assert torch.equal(t0[k], t1[k]), k
    assert (tmp_path / "model_final.pth").exists()
    if mrt:
        s0 = torch.load(tmp_path / "student_rank0.pth", weights_only=False)
        s1 = torch.load(tmp_path / "student_rank1.pth", weights_only=False)
        for k in s0:
            assert torch.equal(s0[k], s1[k]), k
        d0 = torch.load(tmp_path / "threshold_rank0.pth", weights_only=False)
        d1 = torch.load(tmp_path / "threshold_rank1.pth", weights_only=False)
        assert d0["seen"].any() and all(torch.equal(d0[k], d1[k]) for k in d0)
