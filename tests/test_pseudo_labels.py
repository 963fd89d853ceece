import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from torch.nn import functional as F

from conftest import make_inputs, tiny_cfg
from mic_det.modeling import PseudoLabeler, pseudo_label_losses, pseudo_label_stats, select_pseudo_labels


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
    (out,) = select_pseudo_labels([pred], score_threshold=0.8, nms_thresh=0.5, max_area=1.0)
    # 0.79 dropped; the 0.85 box overlaps the 0.95 box of its class (IoU 0.68) and goes;
    # the class-1 box at the same place as the class-0 box stays (NMS is per class);
    # a score exactly at the threshold stays.
    assert torch.allclose(out.gt_scores.sort().values, torch.tensor([0.8, 0.9, 0.95]))
    assert set(out.gt_classes.tolist()) == {0, 1, 2}
    assert out.has("gt_boxes")
    (no_nms,) = select_pseudo_labels([pred], score_threshold=0.8, nms_thresh=1.0, max_area=1.0)
    assert len(no_nms) == 4


def test_stats():
    labels = select_pseudo_labels([_pred([[0, 0, 10, 10]], [0.9], [0]), _pred([[0, 0, 5, 5]], [0.1], [0])], 0.8, 0.5, 1.0)
    stats = pseudo_label_stats(labels, num_classes=3)
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


# detectron2's default boundary threshold and the reference's; RPN box loss types
@pytest.mark.parametrize("boundary_thresh, rpn_box_loss", [(-1, "smooth_l1"), (0, "smooth_l1"), (-1, "giou")])
def test_unit_weights_reproduce_stock_classification_losses(boundary_thresh, rpn_box_loss, storage):
    """Two images, and loss weights other than 1 in the RPN and box predictor: the
    pseudo-label losses at unit quality weights are detectron2's own."""
    cfg = tiny_cfg(mic=True)
    cfg.MODEL.RPN.BOUNDARY_THRESH = boundary_thresh
    cfg.MODEL.RPN.LOSS_WEIGHT = 2.0
    cfg.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 3.0
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 4.0
    cfg.MODEL.RPN.SMOOTH_L1_BETA = 1.0 / 9  # the reference's, not detectron2's default 0
    cfg.MODEL.RPN.BBOX_REG_LOSS_TYPE = rpn_box_loss
    model = build_model(cfg)
    model.roi_heads.box_predictor.loss_weight["loss_cls"] = 5.0
    model.train()
    inputs = make_inputs(2)
    images = model.preprocess_image(inputs)
    targets = [_targets(1.0, images.image_sizes[i])[0] for i in range(2)]
    targets[1].gt_boxes = Boxes(torch.tensor([[60.0, 10.0, 150.0, 80.0]]))
    torch.manual_seed(0)
    ours = pseudo_label_losses(model, images, targets, "none", True)
    torch.manual_seed(0)
    for x, t in zip(inputs, targets):
        x["instances"] = Instances(t.image_size, gt_boxes=t.gt_boxes, gt_classes=t.gt_classes)
    stock = model(inputs)
    assert torch.allclose(ours["loss_mic_rpn_cls"], stock["loss_rpn_cls"])
    assert torch.allclose(ours["loss_mic_cls"], stock["loss_cls"])
    assert torch.allclose(ours["loss_mic_rpn_loc"], stock["loss_rpn_loc"])
    assert torch.allclose(ours["loss_mic_box_reg"], stock["loss_box_reg"])


def test_no_surviving_pseudo_label_gives_zero_loss_and_finite_gradients(storage):
    cfg = tiny_cfg(sada=True, mic=True)
    model = build_model(cfg)
    model.train()
    empty = [select_pseudo_labels([_pred([[0, 0, 10, 10]], [0.3], [0], (96, 160))], 0.8, 0.5, 1.0)[0] for _ in range(2)]
    losses = model(make_inputs(2), make_inputs(2, with_instances=False, seed=3), empty)
    assert losses["loss_mic_rpn_cls"].item() == 0 and losses["loss_mic_cls"].item() == 0
    # the same loss terms as a step with pseudo-labels: box terms only with MIC.BOX_REGRESSION
    assert sorted(k for k in losses if k.startswith("loss_mic")) == ["loss_mic_cls", "loss_mic_rpn_cls"]
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


def test_teacher_weighting_weighs_foreground_samples_by_their_box_and_background_by_one(storage):
    """The MIC losses against detectron2's own per-sample losses on the same samples:
    anchors and ROIs matched to a pseudo-box weigh that box's confidence, background ones
    1; normalised as the stock losses are."""
    cfg = tiny_cfg(mic=True)
    model = build_model(cfg)
    model.train()
    images = model.preprocess_image(make_inputs(2, with_instances=False))
    targets = []
    for i, (boxes, scores) in enumerate((([[20.0, 20.0, 70.0, 60.0], [90.0, 10.0, 150.0, 70.0]], [0.3, 0.9]),
                                         ([[10.0, 30.0, 60.0, 90.0]], [0.6]))):
        t = Instances(images.image_sizes[i])
        t.gt_boxes = Boxes(torch.tensor(boxes))
        t.gt_classes = torch.tensor([1, 2][: len(boxes)])
        t.gt_scores = torch.tensor(scores)
        targets.append(t)
    torch.manual_seed(0)
    ours = pseudo_label_losses(model, images, targets, "teacher", False)

    rpn, roi_heads = model.proposal_generator, model.roi_heads
    torch.manual_seed(0)
    features = model.backbone(images.tensor)
    feats = [features[f] for f in rpn.in_features]
    anchors = rpn.anchor_generator(feats)
    logits, deltas = rpn.rpn_head(feats)
    logits = torch.cat([x.permute(0, 2, 3, 1).flatten(1) for x in logits], dim=1)
    labels, matched = rpn.label_and_sample_anchors(anchors, targets)
    rpn_sum = 0.0
    for i, t in enumerate(targets):
        score_of = {tuple(b.tolist()): s.item() for b, s in zip(t.gt_boxes.tensor, t.gt_scores)}
        valid = labels[i] >= 0
        bce = F.binary_cross_entropy_with_logits(logits[i][valid], labels[i][valid].float(), reduction="none")
        weight = torch.tensor([score_of[tuple(b.tolist())] if lab == 1 else 1.0
                               for b, lab in zip(matched[i][valid], labels[i][valid])])
        assert (labels[i] == 1).any() and (labels[i] == 0).any()
        rpn_sum = rpn_sum + (bce * weight).sum()
    expected_rpn = rpn_sum / (rpn.batch_size_per_image * 2)
    torch.testing.assert_close(ours["loss_mic_rpn_cls"], expected_rpn)

    from mic_det.modeling.rpn_outputs import rpn_outputs

    proposals = roi_heads.label_and_sample_proposals(rpn_outputs(rpn, images, features).proposals, targets)
    box_features = roi_heads.box_pooler([features[f] for f in roi_heads.box_in_features], [p.proposal_boxes for p in proposals])
    scores, _ = roi_heads.box_predictor(roi_heads.box_head(box_features))
    gt_classes = torch.cat([p.gt_classes for p in proposals])
    ce = F.cross_entropy(scores, gt_classes, reduction="none")
    foreground = gt_classes < roi_heads.num_classes
    assert foreground.any() and (~foreground).any()
    weight = torch.where(foreground, torch.cat([p.gt_scores for p in proposals]), torch.ones_like(ce))
    torch.testing.assert_close(ours["loss_mic_cls"], (ce * weight).sum() / len(ce))


def test_nms_acts_on_two_boxes_and_labels_keep_the_image_size():
    pred = _pred([[0, 0, 10, 10], [1, 1, 11, 11]], [0.9, 0.85], [0, 0], size=(50, 60))
    (out,) = select_pseudo_labels([pred], 0.8, 0.5, 1.0)
    assert out.gt_scores.tolist() == [pytest.approx(0.9)] and out.image_size == (50, 60)


def test_stats_of_one_image_and_of_none_confident():
    (one,) = select_pseudo_labels([_pred([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [0, 1])], 0.5, 0.5, 1.0)
    stats = pseudo_label_stats([one], num_classes=2)
    assert stats["mic/pseudo_boxes_per_image"] == 2.0 and stats["mic/images_used_fraction"] == 1.0
    empty = select_pseudo_labels([_pred([[0, 0, 10, 10]], [0.1], [0])] * 2, 0.8, 0.5, 1.0)
    stats = pseudo_label_stats(empty, num_classes=2)
    assert stats == {"mic/pseudo_boxes_per_image": 0.0, "mic/images_used_fraction": 0.0, "mic/pseudo_box_confidence": 0.0,
                     "mic/pseudo_box_area": 0.0, "mic/pseudo_large_box_fraction": 0.0,
                     "mic/pseudo_class_fraction/0": 0.0, "mic/pseudo_class_fraction/1": 0.0}


def test_stats_of_box_size_relative_to_the_image_and_class_mix():
    """What confirmation bias under a large shift looks like: boxes that grow to cover the
    image. Areas are relative to each image's own size (network input, unpadded)."""
    labels = select_pseudo_labels([
        _pred([[0, 0, 100, 100], [0, 0, 10, 10]], [0.9, 0.95], [1, 0], size=(100, 100)),  # areas 1.0, 0.01
        _pred([[0, 0, 60, 50]], [0.85], [1], size=(50, 100)),  # area 3000 / 5000 = 0.6
        _pred([[0, 0, 10, 10]], [0.1], [2], size=(100, 100)),  # not confident: no box
    ], 0.8, 1.0, 1.0)
    stats = pseudo_label_stats(labels, num_classes=3)
    assert stats["mic/pseudo_box_area"] == pytest.approx((1.0 + 0.01 + 0.6) / 3)
    assert stats["mic/pseudo_large_box_fraction"] == pytest.approx(2 / 3)  # > half the image: 1.0 and 0.6
    assert [stats[f"mic/pseudo_class_fraction/{k}"] for k in range(3)] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert stats["mic/pseudo_boxes_per_image"] == 1.0 and stats["mic/images_used_fraction"] == pytest.approx(2 / 3)


def test_box_regression_terms_when_asked(storage):
    cfg = tiny_cfg(mic=True)
    cfg.MIC.BOX_REGRESSION = True
    model = build_model(cfg)
    model.train()
    images = model.preprocess_image(make_inputs(2, with_instances=False))
    keys = {"loss_mic_rpn_cls", "loss_mic_cls", "loss_mic_rpn_loc", "loss_mic_box_reg"}
    empty = [_targets(0.9, images.image_sizes[0])[0][[]] for _ in range(2)]
    losses = model.mic(model, images, empty)
    assert set(losses) == keys and all(v.item() == 0 for v in losses.values())
    losses = model.mic(model, images, [_targets(0.9, images.image_sizes[i])[0] for i in range(2)])
    assert set(losses) == keys and losses["loss_mic_box_reg"] > 0


def test_an_image_with_a_single_pseudo_box_is_used(storage, monkeypatch):
    import mic_det.modeling.mic_loss as mic_loss

    seen = []
    real = mic_loss.pseudo_label_losses
    monkeypatch.setattr(mic_loss, "pseudo_label_losses",
                        lambda m, im, t, *a, **kw: (seen.append((im, t, kw)), real(m, im, t, *a, **kw))[1])
    model = build_model(tiny_cfg(mic=True))
    model.train()
    images = model.preprocess_image(make_inputs(3, with_instances=False))
    one = _targets(0.9, images.image_sizes[0])[0]
    model.mic(model, images, [one[[]], one, one[[]]])
    (masked, targets, kw), = seen
    assert len(targets) == 1 and masked.tensor.shape[0] == 1 and kw["features"] is None
    kept = masked.tensor != 0
    assert torch.equal(masked.tensor[kept], images.tensor[1:2][kept]), "the masked image is the second one"

    # the same when the caller (MRT's reconstruction) already masked all images and ran
    # the backbone: the second image's view and features are picked out
    seen.clear()
    view = model.mic.masked_view(model, images)
    features = {"p2": torch.arange(3.0).view(3, 1, 1, 1).expand(3, 4, 2, 2)}
    monkeypatch.setattr(mic_loss, "pseudo_label_losses", lambda m, im, t, *a, **kw: seen.append((im, t, kw)) or {})
    model.mic.losses_on_view(model, view, features, [one[[]], one, one[[]]])
    (picked, targets, kw), = seen
    assert len(targets) == 1 and torch.equal(picked.tensor, view.tensor[1:2])
    assert kw["features"]["p2"].shape[0] == 1 and (kw["features"]["p2"] == 1).all()


def test_area_ceiling_drops_boxes_larger_than_the_fraction_before_nms():
    """MIC.PSEUDO_LABEL_MAX_AREA: a box over the ceiling (relative to its own image) is not
    a pseudo-label, and it no longer suppresses a smaller box of its class in NMS."""
    pred = _pred([[0, 0, 100, 50], [0, 0, 100, 25], [10, 10, 30, 30]], [0.99, 0.9, 0.85], [0, 0, 1], size=(50, 100))
    # areas: 1.0, 0.5, 0.08 of the 50 x 100 image; the first two overlap (IoU 0.5)
    (kept,) = select_pseudo_labels([pred], 0.8, 0.4, 0.5)
    assert kept.gt_scores.tolist() == pytest.approx([0.9, 0.85])  # 0.5 is at the ceiling: kept
    (off,) = select_pseudo_labels([pred], 0.8, 0.4, 1.0)
    assert off.gt_scores.tolist() == pytest.approx([0.99, 0.85])  # without it the whole-image box wins NMS
    (tight,) = select_pseudo_labels([pred], 0.8, 0.4, 0.49)
    assert tight.gt_scores.tolist() == pytest.approx([0.85])


def test_the_pseudo_labeler_follows_the_config_for_training_and_pictures():
    cfg = tiny_cfg(mic=True)
    cfg.MIC.PSEUDO_LABEL_THRESHOLD, cfg.MIC.PSEUDO_LABEL_NMS_THRESH, cfg.MIC.PSEUDO_LABEL_MAX_AREA = 0.7, 0.3, 0.6
    labeler = PseudoLabeler.from_config(cfg)
    assert (labeler.score_threshold, labeler.nms_thresh, labeler.max_area) == (0.7, 0.3, 0.6)
    pred = _pred([[0, 0, 100, 100], [0, 0, 10, 10], [0, 0, 9, 9]], [0.9, 0.75, 0.65], [0, 1, 2])
    assert labeler([pred])[0].gt_scores.tolist() == pytest.approx([0.75])


def test_mic_pass_with_photometric_augmentation_runs_through_the_model(storage):
    """The configs that turn colour jitter and blur on (cs2foggy_mic.yaml) take the
    normalisation statistics from the model the MIC pass is given."""
    cfg = tiny_cfg(sada=True, mic=True)
    cfg.MIC.COLOR_JITTER_PROB, cfg.MIC.BLUR_PROB = 1.0, 1.0
    model = build_model(cfg)
    model.train()
    confident = [select_pseudo_labels([_pred([[10, 10, 60, 50]], [0.9], [0], (96, 160))], 0.8, 0.5, 1.0)[0] for _ in range(2)]
    losses = model(make_inputs(2), make_inputs(2, with_instances=False, seed=3), confident)
    assert losses["loss_mic_cls"].item() > 0 and all(torch.isfinite(v) for v in losses.values())
