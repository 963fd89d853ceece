"""Two processes on CPU (GLOO) through detectron2's launch, as --num-gpus 2 runs them."""
import torch
from detectron2.engine import launch

from conftest import tiny_cfg
from distributed_worker import train_and_dump_teacher


def test_ranks_hold_identical_teachers(tool_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", tool_env["DETECTRON2_DATASETS"])
    cfg = tiny_cfg(sada=True, mic=True)
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
