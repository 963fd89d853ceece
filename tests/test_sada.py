"""SADA heads: every discriminator level learns, losses have the right targets, and with
adaptation off the model is a stock Faster R-CNN."""
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from conftest import make_inputs, tiny_cfg
from mic_det.modeling import DomainAdaptiveRCNN
from mic_det.modeling.image_discriminator import ImageDomainDiscriminator
from mic_det.modeling.instance_discriminator import InstanceDomainDiscriminator


def test_image_discriminator_one_logit_map_per_level():
    disc = ImageDomainDiscriminator(["p2", "p3"], in_channels=8, hidden_dim=4)
    feats = {"p2": torch.randn(2, 8, 16, 20), "p3": torch.randn(2, 8, 8, 10)}
    out = disc(feats)
    assert out["p2"].shape == (2, 1, 16, 20) and out["p3"].shape == (2, 1, 8, 10)


def test_instance_discriminator_routes_each_level_to_its_own_mlp():
    disc = InstanceDomainDiscriminator(num_levels=4, in_dim=8, hidden_dim=16, dropout=0.0)
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
        torch.nn.init.constant_(head[-1].bias, 3.0)
    for mlp in model.sada.ins_discriminator.levels:
        torch.nn.init.zeros_(mlp[-1].weight)
        torch.nn.init.constant_(mlp[-1].bias, 3.0)
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
