"""SADA heads: every discriminator level learns, losses have the right targets, and with
adaptation off the model is a stock Faster R-CNN."""
import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from conftest import make_inputs, tiny_cfg
from mic_det.modeling import DomainAdaptiveRCNN
from mic_det.modeling.image_discriminator import ImageDomainDiscriminator
from mic_det.modeling.instance_discriminator import InstanceDomainDiscriminator


def test_image_discriminator_one_logit_map_per_level():
    disc = ImageDomainDiscriminator(["p2", "p3"], in_channels=8, hidden_dim=4, init_std=0.01)
    feats = {"p2": torch.randn(2, 8, 16, 20), "p3": torch.randn(2, 8, 8, 10)}
    out = disc(feats)
    assert out["p2"].shape == (2, 1, 16, 20) and out["p3"].shape == (2, 1, 8, 10)


def test_instance_discriminator_routes_each_level_to_its_own_mlp():
    disc = InstanceDomainDiscriminator(num_levels=4, in_dim=8, hidden_dim=16, dropout=0.0, init_std=0.01)
    feats = torch.randn(8, 8)
    levels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    logits = disc(feats, levels)
    logits.sum().backward()
    for level, mlp in enumerate(disc.levels):
        grads = [p.grad for p in mlp.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), f"level {level} got no gradient"
    # each row must come from the MLP of its level
    with torch.no_grad():
        for i, level in enumerate(levels.tolist()):
            assert torch.allclose(logits[i], disc.levels[level](feats[i : i + 1]).squeeze())


def _proposals(image_size, boxes):
    p = Instances(image_size)
    p.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    return p


def test_sada_instance_level_gives_gradient_to_every_level(storage):
    cfg = tiny_cfg(sada=True)
    cfg.MODEL.SADA.INS_DROPOUT = 0.0
    model = build_model(cfg)
    model.train()
    h, w = 512, 512
    images = model.preprocess_image(make_inputs(2, h, w))
    features = model.backbone(images.tensor)
    # sizes 20..500 px cover all four pooling levels p2..p5 (canonical 224 -> p4)
    sizes = [20, 60, 150, 300, 500]
    boxes = [[0, 0, s, s] for s in sizes]
    props = [_proposals((h, w), boxes), _proposals((h, w), boxes)]
    losses = model.sada([(features, props, True), (features, props, False)], model.box_features)
    sum(losses.values()).backward()
    for level, mlp in enumerate(model.sada.ins_discriminator.levels):
        g = mlp[0].weight.grad
        assert g is not None and g.abs().sum() > 0, f"instance MLP of level {level} received no gradient"
    for name, head in model.sada.img_discriminator.heads.items():
        assert head[0].weight.grad.abs().sum() > 0, name


def test_sada_losses_start_at_chance_and_reverse_gradient_into_backbone(storage):
    cfg = tiny_cfg(sada=True)
    cfg.MODEL.SADA.CST_LOSS_WEIGHT = 0.0
    model = build_model(cfg)
    model.train()
    images = model.preprocess_image(make_inputs(2))
    features = model.backbone(images.tensor)
    props = [_proposals(images.image_sizes[i], [[0, 0, 40, 40], [10, 10, 90, 60]]) for i in range(2)]
    losses = model.sada([(features, props, True), (features, props, False)], model.box_features)
    # discriminators are initialised near zero: both BCE terms start at ln 2
    assert abs(losses["loss_sada_img"].item() - 0.6931) < 1e-2
    assert abs(losses["loss_sada_ins"].item() - 0.6931) < 5e-2
    assert "loss_sada_cst" not in losses

    # The image-level gradient reaching a feature map is -GRL weight x the gradient of
    # the loss with respect to that map.
    feat = features["p3"].detach().requires_grad_(True)
    logits = model.sada.img_discriminator({"p3": feat})["p3"]
    direct = torch.autograd.grad(torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)), feat)[0]
    feat2 = features["p3"].detach().requires_grad_(True)
    from mic_det.modeling import scale_gradient

    logits2 = model.sada.img_discriminator({"p3": scale_gradient(feat2, -cfg.MODEL.SADA.IMG_GRL_WEIGHT)})["p3"]
    reversed_ = torch.autograd.grad(
        torch.nn.functional.binary_cross_entropy_with_logits(logits2, torch.ones_like(logits2)), feat2
    )[0]
    assert torch.allclose(reversed_, -cfg.MODEL.SADA.IMG_GRL_WEIGHT * direct, atol=1e-9)


def test_consistency_loss_is_l1_between_pooled_image_and_instance_probabilities(storage):
    cfg = tiny_cfg(sada=True)
    cfg.MODEL.SADA.INS_DROPOUT = 0.0
    model = build_model(cfg)
    model.train()
    images = model.preprocess_image(make_inputs(1))
    features = model.backbone(images.tensor)
    props = [_proposals(images.image_sizes[0], [[0, 0, 40, 40]])]
    # Force the instance head to predict probability ~1 and the image head ~0.5
    last = model.sada.ins_discriminator.levels[0][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 20.0)
    losses = model.sada([(features, props, True)], model.box_features)
    assert abs(losses["loss_sada_cst"].item() - 0.5) < 1e-2


def test_adaptation_off_is_stock_faster_rcnn(storage):
    cfg = tiny_cfg(sada=False, mic=False)
    torch.manual_seed(0)
    ours = build_model(cfg)
    stock_cfg = cfg.clone()
    stock_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    torch.manual_seed(0)
    stock = build_model(stock_cfg)
    assert isinstance(ours, DomainAdaptiveRCNN) and type(stock).__name__ == "GeneralizedRCNN"
    assert list(ours.state_dict().keys()) == list(stock.state_dict().keys())
    stock.load_state_dict(ours.state_dict())
    ours.train()
    stock.train()
    inputs = make_inputs(2)
    torch.manual_seed(1)
    a = ours(inputs)
    torch.manual_seed(1)
    b = stock(inputs)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k]), k
    ours.eval()
    stock.eval()
    with torch.no_grad():
        pa, pb = ours(inputs)[0]["instances"], stock(inputs)[0]["instances"]
    assert torch.allclose(pa.pred_boxes.tensor, pb.pred_boxes.tensor)


def test_sada_state_dict_adds_only_sada_keys():
    stock_keys = set(build_model(tiny_cfg()).state_dict())
    sada_keys = set(build_model(tiny_cfg(sada=True)).state_dict())
    assert stock_keys < sada_keys
    assert all(k.startswith("sada.") for k in sada_keys - stock_keys)


def test_instance_level_draws_from_proposals_source_boxes_and_a_whole_image_box(storage):
    cfg = tiny_cfg(sada=True)
    cfg.MODEL.SADA.INS_PROPOSALS_PER_IMAGE = 1000  # keep the whole pool
    model = build_model(cfg)
    model.train()
    images = model.preprocess_image(make_inputs(1))
    h, w = images.image_sizes[0]
    features = model.backbone(images.tensor)
    props = [_proposals((h, w), [[0, 0, 40, 40], [10, 10, 90, 60]])]
    gt = [Boxes(torch.tensor([[5.0, 6.0, 30.0, 40.0]]))]
    drawn = []

    def box_features(feats, boxes):
        drawn.append(torch.cat([b.tensor for b in boxes]))
        return model.box_features(feats, boxes)

    model.sada([(features, props, True), (features, props, False)], box_features, source_gt_boxes=gt)
    source, target = (set(map(tuple, x.tolist())) for x in drawn[:2])
    proposals = {(0.0, 0.0, 40.0, 40.0), (10.0, 10.0, 90.0, 60.0)}
    assert source == proposals | {(5.0, 6.0, 30.0, 40.0)}
    assert target == proposals | {(0.0, 0.0, float(w), float(h))}

    model.sada.ins_append_boxes = False
    drawn.clear()
    model.sada([(features, props, True), (features, props, False)], box_features, source_gt_boxes=gt)
    assert all(set(map(tuple, x.tolist())) == proposals for x in drawn[:2])


def test_discriminator_accuracy_is_logged(storage):
    """Both discriminators sure that everything is source: right on every source sample,
    wrong on every target one."""
    cfg = tiny_cfg(sada=True)
    cfg.MODEL.SADA.INS_DROPOUT = 0.0
    model = build_model(cfg)
    model.train()
    for head in model.sada.img_discriminator.heads.values():
        torch.nn.init.zeros_(head[-1].weight)
        torch.nn.init.constant_(head[-1].bias, 0.5)  # logit 0.5: source, if only just
    for mlp in model.sada.ins_discriminator.levels:
        torch.nn.init.zeros_(mlp[-1].weight)
        torch.nn.init.constant_(mlp[-1].bias, 0.5)
    model.sada.ins_append_boxes = False  # as many instances per domain
    images = model.preprocess_image(make_inputs(2))
    features = model.backbone(images.tensor)
    props = [_proposals(images.image_sizes[i], [[0, 0, 40, 40], [10, 10, 90, 60]]) for i in range(2)]
    for domains, expected in (([(features, props, True)], 1.0), ([(features, props, False)], 0.0),
                              ([(features, props, True), (features, props, False)], 0.5)):
        model.sada(domains, model.box_features)
        latest = storage.latest()
        assert latest["sada/img_acc"][0] == expected and latest["sada/ins_acc"][0] == expected, domains


def test_discriminator_init_std_comes_from_the_config():
    cfg = tiny_cfg(sada=True)
    cfg.MODEL.SADA.IMG_INIT_STD, cfg.MODEL.SADA.INS_INIT_STD = 0.5, 0.2
    cfg.MODEL.SADA.IMG_HIDDEN_DIM, cfg.MODEL.SADA.INS_HIDDEN_DIM = 256, 256
    torch.manual_seed(0)
    sada = build_model(cfg).sada
    for head in sada.img_discriminator.heads.values():
        for conv in (head[0], head[-1]):
            assert abs(conv.weight.std().item() - 0.5) < 0.1 and not conv.bias.any()
    for mlp in sada.ins_discriminator.levels:
        for lin in (m for m in mlp if isinstance(m, torch.nn.Linear)):
            assert abs(lin.weight.std().item() - 0.2) < 0.04 and not lin.bias.any()


def test_consistency_compares_each_proposals_own_pooled_probability(storage):
    """Two proposals over different image-level probabilities: each is compared with its
    own pooled region, not with an average over the image."""
    cfg = tiny_cfg(sada=True)
    cfg.MODEL.SADA.INS_DROPOUT = 0.0
    model = build_model(cfg)
    model.train()
    for head in model.sada.img_discriminator.heads.values():
        torch.nn.init.normal_(head[0].weight, std=0.5)
        torch.nn.init.normal_(head[-1].weight, std=0.5)
    images = model.preprocess_image(make_inputs(1))
    features = model.backbone(images.tensor)
    props = [_proposals(images.image_sizes[0], [[0, 0, 30, 30], [100, 50, 150, 90]])]
    probs = model.sada.img_discriminator({k: features[k] for k in cfg.MODEL.ROI_HEADS.IN_FEATURES})
    pooled = model.sada.prob_pooler([probs[k].sigmoid() for k in cfg.MODEL.ROI_HEADS.IN_FEATURES], [props[0].proposal_boxes])
    per_box = pooled.mean(dim=(1, 2, 3))
    assert (per_box[0] - per_box[1]).abs() > 1e-3, "the test needs regions that differ"
    # every instance probability halfway between the two: an image average would give 0
    middle = per_box.mean().item()
    for mlp in model.sada.ins_discriminator.levels:
        torch.nn.init.zeros_(mlp[-1].weight)
        torch.nn.init.constant_(mlp[-1].bias, math.log(middle / (1 - middle)))
    losses = model.sada([(features, props, True)], model.box_features)
    expected = (per_box - middle).abs().mean()
    assert torch.allclose(losses["loss_sada_cst"], cfg.MODEL.SADA.CST_LOSS_WEIGHT * expected, atol=1e-6)


def test_image_levels_must_share_their_channels():
    from detectron2.layers import ShapeSpec

    from mic_det.modeling.sada import SADAHeads

    cfg = tiny_cfg(sada=True)
    shapes = {"p2": ShapeSpec(channels=32, stride=4), "p3": ShapeSpec(channels=64, stride=8)}
    cfg.MODEL.SADA.IMG_IN_FEATURES = ["p2", "p3"]
    with pytest.raises(ValueError, match="IMG_IN_FEATURES.*p2.*p3.*channels"):
        SADAHeads.from_config(cfg, shapes, box_pooler=None, box_feature_dim=64)


def test_discriminators_are_not_linear_and_the_instance_one_drops_out():
    """A ReLU between the layers (the heads are not one linear map), and dropout that acts
    in training only."""
    img = ImageDomainDiscriminator(["p2"], in_channels=8, hidden_dim=16, init_std=0.5)
    f = torch.randn(1, 8, 4, 4)
    zero = img({"p2": torch.zeros_like(f)})["p2"]
    assert not torch.allclose(img({"p2": f})["p2"] + img({"p2": -f})["p2"], 2 * zero, atol=1e-4)
    ins = InstanceDomainDiscriminator(num_levels=1, in_dim=8, hidden_dim=64, dropout=0.5, init_std=0.5)
    x, levels = torch.randn(16, 8), torch.zeros(16, dtype=torch.long)
    ins.eval()
    assert torch.equal(ins(x, levels), ins(x, levels))
    assert not torch.allclose(ins(x, levels) + ins(-x, levels), 2 * ins(torch.zeros_like(x), levels), atol=1e-4)
    ins.train()
    torch.manual_seed(0)
    a = ins(x, levels)
    assert not torch.equal(a, ins(x, levels))
    # the reference's shape: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
    assert [type(m).__name__ for m in ins.levels[0]] == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert all(m.p == 0.5 for m in ins.levels[0] if isinstance(m, torch.nn.Dropout))


def test_forward_modes_and_bad_calls(storage):
    """In eval mode the model predicts whatever it is given; in training, pseudo-labels
    need MIC and the source images need their labels (named in the errors)."""
    model = build_model(tiny_cfg(sada=True))
    source, target = make_inputs(2), make_inputs(2, with_instances=False, seed=1)
    model.eval()
    with torch.no_grad():
        out = model(source, target)
    assert isinstance(out, list) and "instances" in out[0]
    model.train()
    assert {"loss_sada_img", "loss_cls"} <= set(model(source, target))
    with pytest.raises(ValueError, match="pseudo_labels.*MIC.ENABLED"):
        model(source, target, [Instances((96, 160))] * 2)
    with pytest.raises(ValueError, match="source inputs must carry 'instances'"):
        model([target[0], source[1]], target)
