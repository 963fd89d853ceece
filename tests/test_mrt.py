"""MRT's three options: the dynamic threshold's rule, selective retraining's reset of
exactly the chosen weights and their optimizer state, and the masked feature
reconstruction's loss (masked cells only, no gradient into the teacher), each through
the trainer too."""
import json
import os

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from torch import nn

from conftest import da_cfg, make_inputs, tiny_cfg
from mic_det.checkpoint import exportable_state_dict
from mic_det.config import check_mrt_config
from mic_det.engine import DomainAdaptiveTrainer
from mic_det.engine.selective_retraining import SelectiveRetrainingHook
from mic_det.modeling.dynamic_threshold import DynamicThreshold
from mic_det.modeling.feature_reconstruction import MaskedFeatureReconstruction
from mic_det.modeling.pseudo_labels import select_pseudo_labels


def _pred(scores, classes, size=(100, 100)):
    p = Instances(size)
    n = len(scores)
    p.pred_boxes = Boxes(torch.tensor([[10.0 * i, 0.0, 10.0 * i + 8, 8.0] for i in range(n)]).reshape(-1, 4))
    p.scores = torch.tensor(scores, dtype=torch.float32)
    p.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return p


# ---- dynamic threshold ---------------------------------------------------------------
def test_dynamic_threshold_rule():
    dt = DynamicThreshold(num_classes=3, floor=0.5, ceiling=0.95, k=1.0, momentum=0.5)
    assert dt.thresholds.tolist() == [0.5, 0.5, 0.5]  # nothing seen: the floor
    # class 0: candidates 0.6 and 0.8 (0.4 is below the floor and ignored); class 2 none
    dt.update([_pred([0.6, 0.4], [0, 0]), _pred([0.8, 0.3], [0, 2])])
    t = dt.thresholds
    # the first batch sets the statistics: mean 0.7, std 0.1 -> 0.8
    assert t[0].item() == pytest.approx(0.8, abs=1e-6)
    assert t[1].item() == t[2].item() == 0.5
    # momentum 0.5: E[s] = 0.5*0.7 + 0.5*0.9 = 0.8, E[s^2] = 0.5*0.5 + 0.5*0.81 = 0.655,
    # std = sqrt(0.655 - 0.64) -> threshold 0.8 + 0.1225 = 0.9225
    dt.update([_pred([0.9], [0])])
    assert dt.thresholds[0].item() == pytest.approx(0.8 + (0.655 - 0.64) ** 0.5, abs=1e-6)
    # more confident still: clipped at the ceiling
    for _ in range(20):
        dt.update([_pred([0.99, 0.999], [0, 0])])
    assert dt.thresholds[0].item() == pytest.approx(0.95)
    assert dt.log_values()["mrt/threshold/0"] == pytest.approx(0.95)


def test_dynamic_threshold_never_below_the_floor_and_survives_a_checkpoint():
    dt = DynamicThreshold(num_classes=2, floor=0.8, ceiling=0.95, k=-3.0, momentum=0.9)
    dt.update([_pred([0.8, 0.81, 0.95], [1, 1, 1])])
    assert dt.thresholds[1].item() == pytest.approx(0.8)  # mean - 3 std is below 0.8
    copy = DynamicThreshold(num_classes=2, floor=0.8, ceiling=0.95, k=-3.0, momentum=0.9)
    copy.load_state_dict(dt.state_dict())
    assert torch.equal(copy.thresholds, dt.thresholds) and copy.seen.tolist() == [False, True]


def test_per_class_thresholds_select_pseudo_labels():
    pred = _pred([0.85, 0.85, 0.7], [0, 1, 2])
    (out,) = select_pseudo_labels([pred], torch.tensor([0.8, 0.9, 0.7]), nms_thresh=1.0, max_area=1.0)
    assert sorted(out.gt_classes.tolist()) == [0, 2]


# ---- selective retraining ------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
        self.head = nn.Linear(3, 1)


class _Trainer:
    def __init__(self, optimizer, max_iter=100):
        self.optimizer, self.iter, self.start_iter, self.max_iter = optimizer, 0, 0, max_iter


def _train_steps(net, optimizer, hook, trainer, iterations):
    from detectron2.utils.events import EventStorage

    with EventStorage(trainer.iter) as storage:
        for it in iterations:
            trainer.iter = storage.iter = it
            hook.before_step()
            optimizer.zero_grad()
            net.head(net.backbone(torch.ones(4, 3))).pow(2).sum().backward()
            optimizer.step()
            hook.after_step()


def _before_step(hook, trainer, it):
    from detectron2.utils.events import EventStorage

    with EventStorage(it):
        trainer.iter = it
        hook.before_step()


@pytest.mark.parametrize("burn_in", [0, 2])
def test_selective_retraining_resets_exactly_the_chosen_weights_and_their_optimizer_state(burn_in):
    torch.manual_seed(0)
    net = _Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    hook = SelectiveRetrainingHook(lambda: net, ["backbone.1"], period=3, start_iter=burn_in)
    trainer = _Trainer(optimizer)
    hook.trainer = trainer
    hook.before_train()
    _train_steps(net, optimizer, hook, trainer, range(0, burn_in))
    start = {k: v.clone() for k, v in net.state_dict().items()}  # weights when adaptation begins
    assert hook.initial.keys() == {"backbone.1.weight", "backbone.1.bias"}

    _train_steps(net, optimizer, hook, trainer, range(burn_in, burn_in + 3))
    assert not torch.equal(net.backbone[1].weight, start["backbone.1.weight"])  # it trained
    _before_step(hook, trainer, burn_in + 3)  # after 3 steps of adaptation: reset before the 4th
    now = net.state_dict()
    for k in ("backbone.1.weight", "backbone.1.bias"):
        assert torch.equal(now[k], start[k]), k
    for k in ("backbone.0.weight", "head.weight"):
        assert not torch.equal(now[k], start[k]), k  # the others keep their training
    assert net.backbone[1].weight not in optimizer.state and net.backbone[1].bias not in optimizer.state
    assert net.head.weight in optimizer.state and net.backbone[0].weight in optimizer.state
    # the remembered weights are a copy, not the live tensors
    _train_steps(net, optimizer, hook, trainer, [burn_in + 3])
    assert torch.equal(hook.initial["backbone.1.weight"], start["backbone.1.weight"])
    assert not torch.equal(net.backbone[1].weight, start["backbone.1.weight"])
    # next reset three steps later, not before
    _train_steps(net, optimizer, hook, trainer, [burn_in + 4, burn_in + 5])
    assert not torch.equal(net.backbone[1].weight, start["backbone.1.weight"])
    _before_step(hook, trainer, burn_in + 6)
    assert torch.equal(net.backbone[1].weight, start["backbone.1.weight"])


def test_selective_retraining_state_travels_and_bad_names_are_errors():
    net = _Net()
    hook = SelectiveRetrainingHook(lambda: net, ["backbone"], period=2, start_iter=0)
    hook.trainer = _Trainer(None)
    hook.before_train()
    other = SelectiveRetrainingHook(lambda: _Net(), ["backbone"], period=2, start_iter=0)
    other.load_state_dict(hook.state_dict())
    other.trainer = _Trainer(None)
    other.trainer.start_iter = 5
    other.before_train()  # restored: keeps the loaded weights, does not take the current ones
    for k, v in hook.initial.items():
        assert torch.equal(other.initial[k], v)
    with pytest.raises(ValueError, match="'neck' names no module.*'backbone', 'head'"):
        SelectiveRetrainingHook(lambda: net, ["neck"], period=2, start_iter=0)
    # resumed with other MODULES than the run began with: an error, not a silent mix
    narrower = SelectiveRetrainingHook(lambda: net, ["backbone.0"], period=2, start_iter=0)
    narrower.load_state_dict(hook.state_dict())
    narrower.trainer = _Trainer(None)
    with pytest.raises(ValueError, match=r"MODULES=\['backbone.0'\] names other weights"):
        narrower.before_train()


# ---- masked feature reconstruction ---------------------------------------------------
def _recon(decay="none", start=0, max_iter=10):
    torch.manual_seed(0)
    return MaskedFeatureReconstruction(
        in_features=["p3"], channels=4, hidden_dim=8, loss_weight=2.0, decay=decay, start_iter=start, max_iter=max_iter
    )


def test_reconstruction_loss_counts_masked_cells_only_and_never_reaches_the_teacher():
    recon = _recon()
    student = {"p3": torch.randn(1, 4, 4, 4, requires_grad=True)}
    teacher = {"p3": torch.randn(1, 4, 4, 4, requires_grad=True)}
    keep = torch.ones(1, 1, 32, 32)
    keep[:, :, :16, :16] = 0  # the top-left quarter of the input: cells [0:2, 0:2] at stride 8
    sizes = [(32, 32)]
    loss = recon(student, teacher, keep, sizes, iteration=0)["loss_mrt_recon"]
    # by hand: weight 2 x the mean over the 4 masked cells of the per-cell channel mean
    pred = recon.decoder(student["p3"])
    by_hand = ((pred - teacher["p3"]) ** 2).mean(dim=1)[0, :2, :2].mean() * 2.0
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    # a change of the teacher's features at a kept cell changes nothing; at a masked one it does
    changed = teacher["p3"].detach().clone()
    changed[..., 3, 3] += 10
    assert recon(student, {"p3": changed}, keep, sizes, 0)["loss_mrt_recon"].item() == pytest.approx(loss.item())
    changed[..., 0, 0] += 10
    assert recon(student, {"p3": changed}, keep, sizes, 0)["loss_mrt_recon"].item() != pytest.approx(loss.item())
    loss.backward()
    assert teacher["p3"].grad is None  # detached
    assert student["p3"].grad is not None and all(p.grad is not None for p in recon.decoder.parameters())


def test_reconstruction_padding_is_never_masked_and_weight_decays_linearly():
    keep = torch.zeros(2, 1, 32, 32)  # everything masked ...
    cells = MaskedFeatureReconstruction.masked_cells(keep, [(32, 32), (16, 32)], (4, 4))
    assert cells[0].all()
    assert cells[1, 0, :2].all() and not cells[1, 0, 2:].any()  # ... but the second image's padding
    recon = _recon(decay="linear", start=4, max_iter=14)
    assert [recon.weight(it) for it in (4, 9, 14, 20)] == pytest.approx([2.0, 1.0, 0.0, 0.0])
    assert _recon(decay="none").weight(100) == 2.0


def test_reconstruction_through_the_model_and_left_out_of_exported_weights(storage):
    cfg = tiny_cfg(mic=True)
    cfg.MRT.MASKED_RECONSTRUCTION.ENABLED = True
    model = build_model(cfg)
    model.train()
    source, target = make_inputs(2, seed=1), make_inputs(2, with_instances=False, seed=2)
    with torch.no_grad():
        teacher_features = model.backbone(model.preprocess_image(target).tensor)
    empty = [Instances((96, 160), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64),
                       gt_scores=torch.zeros(0)) for _ in target]
    # no pseudo-box survives: MIC's losses are zero, the reconstruction still trains
    losses = model(source, target, empty, teacher_features=teacher_features)
    assert losses["loss_mic_cls"].item() == 0 and losses["loss_mrt_recon"].item() > 0
    losses["loss_mrt_recon"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mrt_decoder.parameters())
    assert model.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    # burn-in (no pseudo-labels): a zero loss that still touches the decoder (DDP)
    burn_in = model(source, target, None)
    assert burn_in["loss_mrt_recon"].item() == 0 and burn_in["loss_mrt_recon"].requires_grad
    assert not any(k.startswith("mrt_decoder.") for k in exportable_state_dict(model))
    assert any(k.startswith("mrt_decoder.") for k in model.state_dict())


def test_mrt_options_need_mic_and_sane_values():
    cfg = tiny_cfg(mic=False)
    cfg.MRT.DYNAMIC_THRESHOLD.ENABLED = True
    with pytest.raises(ValueError, match="MRT.DYNAMIC_THRESHOLD.ENABLED needs MIC.ENABLED"):
        check_mrt_config(cfg)
    cfg = tiny_cfg(mic=True)
    cfg.MRT.MASKED_RECONSTRUCTION.ENABLED = True
    cfg.MRT.MASKED_RECONSTRUCTION.IN_FEATURES = ["p9"]
    with pytest.raises(ValueError, match=r"IN_FEATURES=\['p9'\].*p2"):
        check_mrt_config(cfg)
    cfg = tiny_cfg(mic=True)
    cfg.MRT.DYNAMIC_THRESHOLD.ENABLED = True
    cfg.MRT.DYNAMIC_THRESHOLD.CEILING = 0.5
    with pytest.raises(ValueError, match="CEILING must be in"):
        check_mrt_config(cfg)


# ---- all three through the trainer ---------------------------------------------------
def test_all_three_options_train_log_and_checkpoint(synthetic, tmp_path):
    cfg = da_cfg(tmp_path, mic=True, max_iter=5)
    cfg.TEACHER.BURN_IN_ITERS = 1
    cfg.MRT.DYNAMIC_THRESHOLD.ENABLED = True
    cfg.MRT.SELECTIVE_RETRAINING.ENABLED = True
    cfg.MRT.SELECTIVE_RETRAINING.PERIOD = 2
    cfg.MRT.MASKED_RECONSTRUCTION.ENABLED = True
    trainer = DomainAdaptiveTrainer(cfg)
    trainer.resume_or_load(resume=False)
    start = {k: v.clone() for k, v in trainer.student.backbone.state_dict().items()}
    seen = {}

    def record():
        s = trainer.storage
        seen[trainer.iter] = {k: v for k, (v, it) in s.latest().items()
                              if it == trainer.iter and k.startswith(("mrt/", "loss_mrt"))}

    from detectron2.engine import hooks

    trainer.register_hooks([hooks.CallbackHook(after_step=lambda _: record())])
    trainer.train()
    assert "mrt/threshold/0" in seen[1] and "mrt/threshold/0" not in seen[0]  # only once MIC runs
    assert seen[1]["mrt/recon_weight"] == pytest.approx(1.0) and seen[4]["mrt/recon_weight"] == pytest.approx(0.25)
    # adaptation begins at iteration 1: a reset before iteration 3, none at the end
    assert [it for it in seen if "mrt/selective_retraining" in seen[it]] == [3]
    # the remembered weights are those at the end of burn-in: not the initial ones (the
    # burn-in step trained them) and not the final ones (steps 3 and 4 trained them again)
    ckpt = torch.load(os.path.join(tmp_path, "model_final.pth"), weights_only=False)
    final = trainer.student.backbone.state_dict()
    initial = ckpt["trainer"]["hooks"]["SelectiveRetrainingHook"]["initial"]
    assert initial.keys() == {"backbone." + k for k in final}
    assert any(not torch.equal(initial["backbone." + k], start[k]) for k in start)
    assert any(not torch.equal(initial["backbone." + k], final[k].cpu()) for k in final)
    assert ckpt["dynamic_threshold"]["seen"].dtype == torch.bool
    with open(os.path.join(tmp_path, "metrics.json")) as f:
        lines = [json.loads(line) for line in f]
    assert any("mrt/threshold/0" in x and "loss_mrt_recon" in x and "mrt/recon_weight" in x for x in lines)


def test_selective_retraining_without_burn_in_needs_trained_weights(synthetic, tmp_path):
    """Without burn-in the resets return to MODEL.WEIGHTS: random (or ImageNet) weights
    for the backbone would make every reset a restart from scratch, so it is an error."""
    cfg = da_cfg(tmp_path, mic=True, max_iter=2)
    cfg.MRT.SELECTIVE_RETRAINING.ENABLED = True
    trainer = DomainAdaptiveTrainer(cfg)
    with pytest.raises(ValueError, match="BURN_IN_ITERS 0 resets.*lack .* of those weights.*source-trained"):
        trainer.resume_or_load(resume=False)
    # a detector's weights (here: this model's own) are fine
    weights = tmp_path / "detector.pth"
    torch.save({"model": trainer.student.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = str(weights)
    DomainAdaptiveTrainer(cfg).resume_or_load(resume=False)


def test_teacher_checkpoint_without_the_decoder_loads(storage):
    """A run resumed with reconstruction switched on (or off) loads the teacher it saved:
    only training-only heads may differ; any other missing key is still an error."""
    from mic_det.modeling.teacher import EMATeacher

    plain = tiny_cfg(mic=True)
    recon = tiny_cfg(mic=True)
    recon.MRT.MASKED_RECONSTRUCTION.ENABLED = True
    saved = EMATeacher(build_model(plain)).state_dict()
    teacher = EMATeacher(build_model(recon))
    decoder_before = {k: v.clone() for k, v in teacher.state_dict().items() if ".mrt_decoder." in k}
    teacher.load_state_dict(saved)
    assert teacher.restored
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in decoder_before.items())
    key = "model.roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(teacher.state_dict()[key], saved[key])
    EMATeacher(build_model(plain)).load_state_dict(teacher.state_dict())  # and the other way
    del saved[key]
    with pytest.raises(RuntimeError, match="does not fit this model.*cls_score"):
        EMATeacher(build_model(plain)).load_state_dict(saved)
