"""The method as the training step wires it, through the real model and trainer.

The unit tests of each part (gradient reversal alone, the masker alone, the EMA rule
alone) cannot see a part that is wired wrongly. These can: each fails when its mechanism
is broken (docs/mutation_testing.md lists the edits they were checked against).

- SADA: the gradient the detector receives from each discriminator is the
  discriminator's own, reversed and scaled by its GRL weight, at every image level and
  for the instance head; the consistency term's is scaled, not reversed.
- Every loss weight and GRL weight in the config changes the gradient by exactly its
  factor, and only where it should.
- The teacher is the EMA of the student in a training run, updated every
  TEACHER.UPDATE_PERIOD steps after burn-in, and restarts from the student when burn-in
  ends; MIC runs from that iteration on.
- The student's MIC pass sees the target with blocks masked; the teacher never does.
- The teacher's confident boxes reach the MIC loss with their confidences; images left
  with no box are left out of the MIC pass.
"""
import pytest
import torch
from detectron2.engine import HookBase
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.env import seed_all_rng
from torch.nn import functional as F

import mic_det.modeling.mic_loss as mic_loss_module
from conftest import da_cfg, make_inputs, tiny_cfg
from mic_det.engine import DomainAdaptiveTrainer


# ---------------------------------------------------------------------------------------
# SADA: direction and scale of the adversarial gradients
# ---------------------------------------------------------------------------------------
class GradientProbe:
    """Records the tensors on both sides of every gradient-reversal point of the SADA
    heads: the detector side (backbone outputs, box-head outputs) and the discriminator
    side (the inputs of the image- and instance-level discriminators)."""

    def __init__(self, model):
        self.features = []  # one {name: tensor} per backbone call
        self.box_features = []  # box-head outputs
        self.img_inputs = {name: [] for name in model.sada.img_discriminator.heads}
        self.ins_inputs = []
        model.backbone.register_forward_hook(lambda m, args, out: self.features.append(dict(out)))
        model.roi_heads.box_head.register_forward_hook(lambda m, args, out: self.box_features.append(out))
        for name, head in model.sada.img_discriminator.heads.items():
            head.register_forward_pre_hook(lambda m, args, name=name: self.img_inputs[name].append(args[0]))
        model.sada.ins_discriminator.register_forward_pre_hook(lambda m, args: self.ins_inputs.append(args[0]))


def grad(loss, tensor):
    """d loss / d tensor, or None where ``loss`` does not depend on ``tensor``."""
    return torch.autograd.grad(loss, tensor, retain_graph=True, allow_unused=True)[0]


def detector_side_grad(loss, features, name):
    """The gradient of ``loss`` that reaches feature map ``name`` directly: less what
    comes through maps computed from it (p6 is pooled from p5)."""
    f = features[name]
    total = grad(loss, f)
    for other_name, other in features.items():
        g = grad(loss, other) if other_name != name else None
        if g is not None:
            via = torch.autograd.grad(other, f, g, retain_graph=True, allow_unused=True)[0]
            if via is not None:
                total = total - via
    return total


def discriminator_side_grad(loss, tensor, inputs):
    """Sum of the gradients of ``loss`` at those discriminator inputs that are ``tensor``
    passed through a gradient-scaling point (the identity forward), or None if ``loss``
    depends on none of them."""
    grads = [grad(loss, x) for x in inputs if x.shape == tensor.shape and torch.equal(x, tensor)]
    grads = [g for g in grads if g is not None]
    return torch.stack(grads).sum(0) if grads else None


def assert_grad_is(actual, expected_direction, scale, what):
    assert expected_direction is not None, f"{what}: the discriminator received no gradient"
    assert expected_direction.abs().max() > 0, f"{what}: the discriminator's gradient is zero"
    assert actual is not None, f"{what}: no gradient reached the detector"
    expected = scale * expected_direction
    tol = 1e-5 * expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=tol, msg=what)


def sada_forward(cfg, probe=True):
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    p = GradientProbe(model) if probe else None
    torch.manual_seed(1)
    losses = model(make_inputs(2, seed=0), make_inputs(2, with_instances=False, seed=1))
    return model, p, losses


def test_image_level_gradient_is_reversed_and_scaled_at_every_level(storage):
    cfg = tiny_cfg(sada=True)
    w = cfg.MODEL.SADA.IMG_GRL_WEIGHT
    model, probe, losses = sada_forward(cfg)
    loss = losses["loss_sada_img"]
    assert len(probe.features) == 2, "SADA needs one backbone pass per domain"
    for domain, features in zip(("source", "target"), probe.features):
        for name in cfg.MODEL.SADA.IMG_IN_FEATURES:
            d = discriminator_side_grad(loss, features[name], probe.img_inputs[name])
            assert_grad_is(detector_side_grad(loss, features, name), d, -w, f"{domain} {name}")


def test_instance_level_gradient_is_reversed_and_scaled(storage):
    cfg = tiny_cfg(sada=True)
    w = cfg.MODEL.SADA.INS_GRL_WEIGHT
    model, probe, losses = sada_forward(cfg)
    loss = losses["loss_sada_ins"]
    checked = 0
    for f in probe.box_features:
        d = discriminator_side_grad(loss, f, probe.ins_inputs)
        if d is not None:
            assert_grad_is(grad(loss, f), d, -w, f"box features #{checked}")
            checked += 1
    assert checked == 2, "one instance-level batch per domain must reach the discriminator"


def test_consistency_gradient_is_scaled_not_reversed(storage, monkeypatch):
    cfg = tiny_cfg(sada=True)
    s = cfg.MODEL.SADA
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    probe = GradientProbe(model)
    # Cut the path from the box features back into the feature maps, so that what a
    # feature map receives from the consistency loss is the image-level part alone.
    box_features = model.box_features
    monkeypatch.setattr(model, "box_features", lambda feats, boxes: box_features({k: v.detach() for k, v in feats.items()}, boxes))
    torch.manual_seed(1)
    losses = model(make_inputs(2, seed=0), make_inputs(2, with_instances=False, seed=1))
    loss = losses["loss_sada_cst"]
    levels_checked = set()
    for features in probe.features:
        for name in s.IMG_IN_FEATURES:
            d = discriminator_side_grad(loss, features[name], probe.img_inputs[name])
            if name not in cfg.MODEL.ROI_HEADS.IN_FEATURES:
                assert d is None, f"{name} is not pooled, so it takes no part in consistency"
            elif d.any():  # levels with no proposal of their size get no gradient at all
                scale = s.CST_GRAD_SCALE * s.IMG_GRL_WEIGHT
                assert_grad_is(detector_side_grad(loss, features, name), d, scale, f"consistency, image level {name}")
                levels_checked.add(name)
    assert levels_checked, "no image level received a consistency gradient"
    checked = 0
    for f in probe.box_features:
        d = discriminator_side_grad(loss, f, probe.ins_inputs)
        if d is not None:
            assert_grad_is(grad(loss, f), d, s.CST_GRAD_SCALE * s.INS_GRL_WEIGHT, "consistency, instance level")
            checked += 1
    assert checked == 2


def test_discriminators_label_source_one_and_target_zero(storage):
    """A discriminator sure that everything is source has a small loss on source images
    and a large one on target images, at both levels."""
    cfg = tiny_cfg(sada=True)
    cfg.MODEL.SADA.CST_LOSS_WEIGHT = 0.0
    cfg.MODEL.SADA.INS_DROPOUT = 0.0
    model = build_model(cfg)
    model.train()
    for head in model.sada.img_discriminator.heads.values():
        torch.nn.init.zeros_(head[-1].weight)
        torch.nn.init.constant_(head[-1].bias, 3.0)
    for mlp in model.sada.ins_discriminator.levels:
        torch.nn.init.zeros_(mlp[-1].weight)
        torch.nn.init.constant_(mlp[-1].bias, 3.0)
    images = model.preprocess_image(make_inputs(2))
    features = model.backbone(images.tensor)
    boxes = Instances(images.image_sizes[0], proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 40.0, 40.0]])))
    sure = F.softplus(torch.tensor(-3.0)).item()  # BCE of logit 3 against label 1
    wrong = F.softplus(torch.tensor(3.0)).item()  # ... against label 0
    for is_source, expected in ((True, sure), (False, wrong)):
        losses = model.sada([(features, [boxes, boxes], is_source)], model.box_features)
        for key in ("loss_sada_img", "loss_sada_ins"):
            assert abs(losses[key].item() - expected) < 1e-4, (key, is_source, losses[key].item())


# ---------------------------------------------------------------------------------------
# Every weight scales its gradient by exactly its factor
# ---------------------------------------------------------------------------------------
def fixed_pseudo_labels(n=2, size=(96, 160)):
    out = []
    for i in range(n):
        t = Instances(size)
        t.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 30.0, 120.0, 90.0]]) + i)
        t.gt_classes = torch.tensor([0, 2])
        t.gt_scores = torch.tensor([0.9, 0.85])
        out.append(t)
    return out


def step_gradients(overrides, keys):
    """Losses and parameter gradients of one SADA + MIC forward of ``keys``, same
    initialisation and same random draws (sampling, dropout, masks) for every config."""
    cfg = tiny_cfg(sada=True, mic=True)
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    # Discriminators away from chance: at their near-zero initialisation their gradients
    # are sums of terms that almost cancel, i.e. rounding noise.
    for m in model.sada.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.normal_(m.weight, std=0.1)
            torch.nn.init.normal_(m.bias, std=0.1)
    torch.manual_seed(1)
    losses = model(make_inputs(2, seed=0), make_inputs(2, with_instances=False, seed=1), fixed_pseudo_labels())
    sum(losses[k] for k in keys).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def part(grads, prefix):
    if prefix == "detector":
        return {k: v for k, v in grads.items() if not k.startswith("sada.")}
    return {k: v for k, v in grads.items() if k.startswith(prefix)}


SCALED = [
    # key, default -> x3, losses backpropagated, {part: factor of its gradient}
    ("MODEL.SADA.IMG_GRL_WEIGHT", ["loss_sada_img"], {"detector": 3.0, "sada.img_discriminator.": 1.0}),
    ("MODEL.SADA.IMG_LOSS_WEIGHT", ["loss_sada_img"], {"detector": 3.0, "sada.img_discriminator.": 3.0}),
    ("MODEL.SADA.INS_GRL_WEIGHT", ["loss_sada_ins"], {"detector": 3.0, "sada.ins_discriminator.": 1.0}),
    ("MODEL.SADA.INS_LOSS_WEIGHT", ["loss_sada_ins"], {"detector": 3.0, "sada.ins_discriminator.": 3.0}),
    ("MODEL.SADA.CST_GRAD_SCALE", ["loss_sada_cst"], {"detector": 3.0, "sada.": 1.0}),
    ("MODEL.SADA.CST_LOSS_WEIGHT", ["loss_sada_cst"], {"detector": 3.0, "sada.": 3.0}),
    ("MIC.LOSS_WEIGHT", ["loss_mic_rpn_cls", "loss_mic_cls"], {"detector": 3.0}),
]


@pytest.mark.parametrize("key,keys,factors", SCALED, ids=[row[0] for row in SCALED])
def test_each_weight_scales_its_gradient_by_exactly_its_factor(key, keys, factors, storage):
    cfg = tiny_cfg(sada=True, mic=True)
    default = cfg
    for name in key.split("."):
        default = getattr(default, name)
    base_losses, base = step_gradients({}, keys)
    losses, scaled = step_gradients({key: 3.0 * default}, keys)
    is_loss_weight = "LOSS_WEIGHT" in key
    for k in keys:
        expected = base_losses[k] * (3.0 if is_loss_weight else 1.0)
        torch.testing.assert_close(losses[k], expected, rtol=1e-5, atol=0, msg=f"{key}: {k}")
    for prefix, factor in factors.items():
        a, b = part(base, prefix), part(scaled, prefix)
        assert a and a.keys() == b.keys(), (key, prefix)
        largest = max(v.norm() for v in a.values())
        assert largest > 0, f"{key}: no gradient in {prefix}"
        for n in a:
            # relative to the tensor, with a floor for tensors whose gradient is itself a
            # near-cancelling sum (rounding noise); a wrong factor is off by 30 % or more
            error = (b[n] - factor * a[n]).norm()
            assert error <= 1e-3 * factor * (a[n].norm() + 1e-2 * largest), (key, n, error.item(), a[n].norm().item())
    # the other losses do not move
    for k in base_losses.keys() - set(keys):
        torch.testing.assert_close(losses[k], base_losses[k], rtol=1e-6, atol=0, msg=f"{key} changed {k}")


# ---------------------------------------------------------------------------------------
# The teacher in a training run
# ---------------------------------------------------------------------------------------
def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class TeacherRecorder(HookBase):
    """Registered last, so it sees each step after every other hook: records (iteration,
    teacher before the step, teacher after it, student after it)."""

    def __init__(self):
        self.rows = []

    def before_step(self):
        self._before = snapshot(self.trainer.teacher.model)

    def after_step(self):
        t = self.trainer
        self.rows.append((t.iter, self._before, snapshot(t.teacher.model), snapshot(t.student)))


def build_trainer(cfg):
    seed_all_rng(0)
    torch.manual_seed(0)
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer


def assert_same_state(a, b, what):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k}"


# period 3 after 2 burn-in iterations: an update rule counting from the wrong start fails
@pytest.mark.parametrize("burn_in,period", [(2, 1), (2, 3), (0, 1)])
def test_teacher_is_the_ema_of_the_student_and_restarts_at_burn_in(burn_in, period, synthetic, tmp_path):
    alpha = 0.7
    cfg = da_cfg(tmp_path, mic=True, max_iter=5)
    cfg.TEACHER.BURN_IN_ITERS = burn_in
    cfg.TEACHER.EMA_ALPHA = alpha
    cfg.TEACHER.UPDATE_PERIOD = period
    trainer = build_trainer(cfg)
    recorder = TeacherRecorder()
    trainer.register_hooks([recorder])
    trainer.train()

    updates = 0
    for it, before, after, student in recorder.rows:
        if it < burn_in - 1:
            assert_same_state(after, before, f"teacher moved during burn-in (iteration {it})")
        elif it == burn_in - 1:
            assert_same_state(after, student, "teacher not re-initialised from the student at the end of burn-in")
        elif (it + 1 - burn_in) % period == 0:
            updates += 1
            for k in after:
                if after[k].is_floating_point():
                    expected = alpha * before[k] + (1 - alpha) * student[k]
                    torch.testing.assert_close(after[k], expected, rtol=1e-5, atol=1e-7, msg=f"iteration {it}: {k}")
                else:
                    assert torch.equal(after[k], student[k]), k
            assert any(not torch.equal(after[k], before[k]) for k in after), f"teacher did not move at {it}"
        else:
            assert_same_state(after, before, f"teacher updated off its period (iteration {it})")
    assert updates == len([it for it in range(burn_in, 5) if (it + 1 - burn_in) % period == 0]) > 0
    mic_iterations = [it for _, it in trainer.storage.history("loss_mic_cls").values()]
    assert mic_iterations == list(range(burn_in, 5)), "MIC must run from the end of burn-in on, and not before"


# ---------------------------------------------------------------------------------------
# What the student and the teacher see
# ---------------------------------------------------------------------------------------
def masked_blocks(masked, full, block):
    """For a view ``masked`` of ``full``: (number of blocks zeroed, number of blocks with
    image content), or None if some block is neither unchanged nor zeroed."""
    _, _, h, w = full.shape
    zeroed = content = 0
    for n in range(full.shape[0]):
        for y in range(0, h, block):
            for x in range(0, w, block):
                m, f = masked[n, :, y : y + block, x : x + block], full[n, :, y : y + block, x : x + block]
                if not f.any():
                    continue  # padding
                content += 1
                if not m.any():
                    zeroed += 1
                elif not torch.equal(m, f):
                    return None
    return zeroed, content


def record_inputs(module, into):
    module.register_forward_pre_hook(lambda m, args: into.append(args[0].detach().clone()))


def test_student_mic_pass_sees_masked_target_and_teacher_never_does(synthetic, tmp_path):
    cfg = da_cfg(tmp_path, sada=True, mic=True, max_iter=1)
    cfg.MIC.MASK_BLOCK_SIZE = 16
    cfg.MIC.MASK_RATIO = 0.5
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # every target image gets pseudo-boxes
    trainer = build_trainer(cfg)
    student_inputs, teacher_inputs = [], []
    record_inputs(trainer.student.backbone, student_inputs)
    record_inputs(trainer.teacher.model.backbone, teacher_inputs)
    trainer.train()

    assert len(teacher_inputs) == 1, "the teacher labels the target batch once per step"
    target = teacher_inputs[0]
    assert target.shape[0] == cfg.SOLVER.IMS_PER_BATCH_TARGET
    # the teacher sees the target exactly as the student's (unmasked) SADA pass does
    assert sum(x.shape == target.shape and torch.equal(x, target) for x in student_inputs) == 1
    views = [masked_blocks(x, target, 16) for x in student_inputs if x.shape == target.shape and not torch.equal(x, target)]
    views = [v for v in views if v is not None]
    assert len(views) == 1, "one student pass must see the teacher's target images with blocks masked"
    zeroed, content = views[0]
    assert 0.2 < zeroed / content < 0.8, f"{zeroed} of {content} blocks masked at MASK_RATIO 0.5"
    # and nothing the teacher saw was masked
    assert masked_blocks(target, target, 16)[0] == 0


# ---------------------------------------------------------------------------------------
# Pseudo-labels reach the MIC loss
# ---------------------------------------------------------------------------------------
def prediction(size, boxes, scores, classes):
    p = Instances(size)
    p.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    p.scores = torch.tensor(scores)
    p.pred_classes = torch.tensor(classes)
    return p


def test_confident_teacher_boxes_reach_the_mic_loss_with_their_confidences(synthetic, tmp_path, monkeypatch):
    cfg = da_cfg(tmp_path, mic=True, max_iter=1)
    cfg.MIC.PSEUDO_LABEL_THRESHOLD = 0.8
    cfg.MIC.PSEUDO_LABEL_NMS_THRESH = 0.5
    trainer = build_trainer(cfg)
    seen = {}

    def teacher_predict(batched_inputs):
        seen["target"] = batched_inputs
        size = tuple(batched_inputs[0]["image"].shape[1:])
        return [
            prediction(
                size,
                [[10, 10, 50, 40], [12, 11, 52, 41], [60, 20, 100, 60], [0, 0, 20, 20]],
                [0.95, 0.9, 0.85, 0.5],
                [1, 1, 2, 0],
            ),
            prediction(tuple(batched_inputs[1]["image"].shape[1:]), [[5, 5, 30, 30]], [0.3], [0]),
        ]

    def spy(model, images, targets, quality_weight, box_regression, features=None):
        seen["images"], seen["targets"], seen["settings"] = images, targets, (quality_weight, box_regression)
        seen["student"] = model
        return original(model, images, targets, quality_weight, box_regression, features=features)

    original = mic_loss_module.pseudo_label_losses
    monkeypatch.setattr(trainer.teacher, "predict", teacher_predict)
    monkeypatch.setattr(mic_loss_module, "pseudo_label_losses", spy)
    trainer.train()

    assert seen["settings"] == ("teacher", False) and seen["student"] is trainer.student  # as configured
    (t,) = seen["targets"]  # the image left without a box is not in the MIC pass
    assert torch.equal(t.gt_boxes.tensor, torch.tensor([[10.0, 10, 50, 40], [60, 20, 100, 60]]))
    assert t.gt_classes.tolist() == [1, 2]
    torch.testing.assert_close(t.gt_scores, torch.tensor([0.95, 0.85]))
    # the masked image is the first target image, not the second
    masked = seen["images"].tensor
    first = trainer.student.preprocess_image(seen["target"][:1]).tensor
    assert masked.shape == first.shape
    kept = masked != 0
    assert kept.any() and torch.equal(masked[kept], first[kept])
    history = trainer.storage.history
    assert history("mic/pseudo_boxes_per_image").latest() == 1.0
    assert history("mic/images_used_fraction").latest() == 0.5
    assert abs(history("mic/pseudo_box_confidence").latest() - 0.9) < 1e-6
    assert history("loss_mic_cls").latest() > 0


def test_mic_pass_logs_its_own_sampling_figures(synthetic, tmp_path):
    """The MIC pass samples ROIs too: its figures go under mic/, the source's stay."""
    cfg = da_cfg(tmp_path, mic=True, max_iter=1)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    trainer = build_trainer(cfg)
    trainer.train()
    logged = trainer.storage.histories()
    for key in ("roi_head/num_fg_samples", "mic/roi_head/num_fg_samples"):
        assert key in logged, key


# ---------------------------------------------------------------------------------------
# Masked source
# ---------------------------------------------------------------------------------------
def test_masked_source_adds_a_detection_loss_and_sada_sees_the_unmasked_source(storage):
    cfg = tiny_cfg(sada=True, mic=True)
    cfg.MIC.MASK_SOURCE = True
    cfg.MIC.MASK_BLOCK_SIZE = 16
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    calls = []  # (backbone input, backbone output)
    model.backbone.register_forward_hook(lambda m, args, out: calls.append((args[0], out)))
    probe = GradientProbe(model)
    source, target = make_inputs(2, seed=0), make_inputs(2, with_instances=False, seed=1)
    unmasked = model.preprocess_image(source).tensor

    losses = model(source, target, fixed_pseudo_labels())
    for k in ("loss_rpn_cls", "loss_cls", "loss_box_reg", "loss_rpn_loc"):
        masked_key = k.replace("loss_", "loss_mic_src_")
        assert masked_key in losses and torch.isfinite(losses[masked_key]), masked_key
    inputs = [x for x, _ in calls]
    assert sum(torch.equal(x, unmasked) for x in inputs) == 1
    views = [masked_blocks(x, unmasked, 16) for x in inputs if x.shape == unmasked.shape and not torch.equal(x, unmasked)]
    assert [v for v in views if v is not None and v[0] > 0], "no backbone pass saw the masked source"
    # SADA's source features are those of the unmasked source
    (source_features,) = [out for x, out in calls if torch.equal(x, unmasked)]
    assert any(torch.equal(x, source_features["p2"]) for x in probe.img_inputs["p2"])

    # during burn-in (no pseudo-labels) MIC is off: no masked source either
    plain = model(source, target)
    assert not [k for k in plain if k.startswith("loss_mic")]
