import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from conftest import make_inputs, tiny_cfg
from mic_det.modeling import pseudo_label_losses, pseudo_label_stats, select_pseudo_labels


def _pred(boxes, scores, classes, size=(100, 100)):
    p = Instances(size)
    p.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    p.scores = torch.tensor(scores)
    p.pred_classes = torch.tensor(classes)
    return p


def test_threshold_then_nms():
    pred = _pred(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10], [70, 70, 90, 90]],
        [0.95, 0.85, 0.79, 0.9, 0.8],
        [0, 0, 1, 1, 2],
    )
    (out,) = select_pseudo_labels([pred], score_threshold=0.8, nms_thresh=0.5)
    # 0.79 dropped; the 0.85 box overlaps the 0.95 box of its class (IoU 0.68) and goes;
    # the class-1 box at the same place as the class-0 box stays (NMS is per class);
    # a score exactly at the threshold stays.
    assert torch.allclose(out.gt_scores.sort().values, torch.tensor([0.8, 0.9, 0.95]))
    assert set(out.gt_classes.tolist()) == {0, 1, 2}
    assert out.has("gt_boxes")
    (no_nms,) = select_pseudo_labels([pred], score_threshold=0.8, nms_thresh=1.0)
    assert len(no_nms) == 4


def test_stats():
    labels = select_pseudo_labels([_pred([[0, 0, 10, 10]], [0.9], [0]), _pred([[0, 0, 5, 5]], [0.1], [0])], 0.8, 0.5)
    stats = pseudo_label_stats(labels)
    assert stats["mic/pseudo_boxes_per_image"] == 0.5
    assert stats["mic/images_used_fraction"] == 0.5
    assert abs(stats["mic/pseudo_box_confidence"] - 0.9) < 1e-6


def _targets(conf, size):
    t = Instances(size)
    t.gt_boxes = Boxes(torch.tensor([[20.0, 20.0, 70.0, 60.0]]))
    t.gt_classes = torch.tensor([1])
    t.gt_scores = torch.tensor([conf])
    return [t]


def test_teacher_weighting_is_linear_in_box_confidence(storage):
    cfg = tiny_cfg(mic=True)
    model = build_model(cfg)
    model.train()
    images = model.preprocess_image(make_inputs(1, with_instances=False))

    def losses(conf):
        torch.manual_seed(0)  # same anchor / proposal sampling each time
        return pseudo_label_losses(model, images, _targets(conf, images.image_sizes[0]), "teacher", False)

    l0, l5, l1 = losses(0.0), losses(0.5), losses(1.0)
    for k in ("loss_mic_rpn_cls", "loss_mic_cls"):
        full = (l1[k] - l0[k]).item()
        half = (l5[k] - l0[k]).item()
        assert full > 0, k
        assert abs(half - 0.5 * full) < 1e-5 * max(1.0, abs(full)), (k, half, full)


@pytest.mark.parametrize("boundary_thresh", [-1, 0])  # detectron2's default, the reference's
def test_unit_weights_reproduce_stock_classification_losses(boundary_thresh, storage):
    cfg = tiny_cfg(mic=True)
    cfg.MODEL.RPN.BOUNDARY_THRESH = boundary_thresh
    model = build_model(cfg)
    model.train()
    inputs = make_inputs(1)
    images = model.preprocess_image(inputs)
    targets = _targets(1.0, images.image_sizes[0])
    ours = None
    torch.manual_seed(0)
    ours = pseudo_label_losses(model, images, targets, "none", True)
    torch.manual_seed(0)
    inputs[0]["instances"] = Instances(targets[0].image_size, gt_boxes=targets[0].gt_boxes, gt_classes=targets[0].gt_classes)
    stock = model(inputs)
    assert torch.allclose(ours["loss_mic_rpn_cls"], stock["loss_rpn_cls"])
    assert torch.allclose(ours["loss_mic_cls"], stock["loss_cls"])
    assert torch.allclose(ours["loss_mic_rpn_loc"], stock["loss_rpn_loc"])
    assert torch.allclose(ours["loss_mic_box_reg"], stock["loss_box_reg"])


def test_no_surviving_pseudo_label_gives_zero_loss_and_finite_gradients(storage):
    cfg = tiny_cfg(sada=True, mic=True)
    model = build_model(cfg)
    model.train()
    empty = [select_pseudo_labels([_pred([[0, 0, 10, 10]], [0.3], [0], (96, 160))], 0.8, 0.5)[0] for _ in range(2)]
    losses = model(make_inputs(2), make_inputs(2, with_instances=False, seed=3), empty)
    assert losses["loss_mic_rpn_cls"].item() == 0 and losses["loss_mic_cls"].item() == 0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_student_weighting_uses_student_confidence(storage):
    cfg = tiny_cfg(mic=True)
    model = build_model(cfg)
    model.train()
    images = model.preprocess_image(make_inputs(1, with_instances=False))
    targets = _targets(1.0, images.image_sizes[0])
    torch.manual_seed(0)
    none = pseudo_label_losses(model, images, targets, "none", False)
    torch.manual_seed(0)
    student = pseudo_label_losses(model, images, targets, "student", False)
    # weights are probabilities in (0, 1): every term shrinks, none vanishes
    for k in none:
        assert 0 < student[k].item() < none[k].item(), k
