import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from torch import nn

from conftest import make_inputs, tiny_cfg
from mic_det.modeling import EMATeacher


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


def test_ema_formula_on_parameters_and_buffers():
    student = Tiny()
    teacher = EMATeacher(student)
    t0 = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student.bn.running_mean.add_(2.0)
        student.bn.num_batches_tracked += 7
    teacher.update(student, alpha=0.9)
    s = student.state_dict()
    t = teacher.model.state_dict()
    for k in ("lin.weight", "lin.bias", "bn.weight", "bn.running_mean", "bn.running_var"):
        assert torch.allclose(t[k], 0.9 * t0[k] + 0.1 * s[k]), k
    # integer buffers are copied, not averaged
    assert t["bn.num_batches_tracked"].item() == s["bn.num_batches_tracked"].item() == 7


def test_teacher_takes_no_gradient_and_stays_in_eval_mode():
    student = Tiny()
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.model.training
    student.train()
    assert not teacher.model.training


def test_teacher_predicts_in_eval_mode_without_graph():
    cfg = tiny_cfg(mic=True)
    student = build_model(cfg)
    student.train()
    teacher = EMATeacher(student)
    seen = []
    teacher.model.roi_heads.register_forward_hook(lambda m, i, o: seen.append(m.training))
    out = teacher.predict(make_inputs(2, with_instances=False))
    assert seen == [False]
    assert len(out) == 2 and not out[0].scores.requires_grad
    assert student.training  # labelling must not change the student's mode


def test_checkpoint_round_trip_restores_teacher(tmp_path):
    cfg = tiny_cfg(mic=True)
    student = build_model(cfg)
    teacher = EMATeacher(student)
    with torch.no_grad():
        for p in teacher.model.parameters():
            p.add_(0.5)  # make the teacher differ from the student
    DetectionCheckpointer(student, str(tmp_path), teacher=teacher).save("ckpt")

    student2 = build_model(cfg)
    teacher2 = EMATeacher(student2)
    assert not teacher2.restored
    DetectionCheckpointer(student2, str(tmp_path), teacher=teacher2).load(str(tmp_path / "ckpt.pth"))
    assert teacher2.restored
    for (k, a), b in zip(teacher.model.state_dict().items(), teacher2.model.state_dict().values()):
        assert torch.equal(a, b), k
    for (k, a), b in zip(student.state_dict().items(), student2.state_dict().values()):
        assert torch.equal(a, b), k


def test_loading_a_teacher_state_that_does_not_fit_is_an_error():
    teacher = EMATeacher(Tiny())
    state = teacher.state_dict()
    state.pop("model.lin.bias")
    with pytest.raises(RuntimeError, match="lin.bias"):
        teacher.load_state_dict(state)


def test_a_student_of_another_shape_is_named():
    teacher = EMATeacher(Tiny())
    other = Tiny()
    other.extra = nn.Linear(2, 2)
    with pytest.raises(KeyError, match="extra.weight"):
        teacher.update(other, alpha=0.9)


def test_a_partial_teacher_state_loads_when_asked_not_to_be_strict():
    teacher = EMATeacher(Tiny())
    state = teacher.state_dict()
    state.pop("model.lin.bias")
    teacher.load_state_dict(state, strict=False)
    assert teacher.restored
