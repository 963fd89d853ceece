import math

import torch
from detectron2.modeling import build_model

from conftest import make_inputs, tiny_cfg
from mic_det.modeling import BlockMasker
from mic_det.modeling.photometric import PhotometricAugmentation, padding_mask, rotate_hue


def test_masked_fraction_matches_ratio_over_many_draws():
    torch.manual_seed(0)
    masker = BlockMasker(block_size=8, ratio=0.5)
    masks = masker.sample_masks(200, 64, 96, "cpu")
    assert abs(1 - masks.mean().item() - 0.5) < 0.02
    masks = BlockMasker(8, 0.7).sample_masks(200, 64, 96, "cpu")
    assert abs(1 - masks.mean().item() - 0.7) < 0.02


def test_masks_are_whole_blocks_and_differ_per_image():
    torch.manual_seed(1)
    b = 8
    masks = BlockMasker(b, 0.5).sample_masks(4, 40, 52, "cpu")  # not multiples of the block
    assert masks.shape == (4, 1, 40, 52)
    for m in masks[:, 0]:
        for by in range(math.ceil(40 / b)):
            for bx in range(math.ceil(52 / b)):
                block = m[by * b : (by + 1) * b, bx * b : (bx + 1) * b]
                assert block.min() == block.max(), "a block is partly masked"
    assert not torch.equal(masks[0], masks[1])


def test_masked_pixels_take_the_pixel_mean_and_padding_stays_zero():
    torch.manual_seed(2)
    # normalised batch: image 0 is 30x40 inside a 32x48 padded tensor
    x = torch.randn(2, 3, 32, 48)
    x[0, :, 30:, :] = 0
    x[0, :, :, 40:] = 0
    out = BlockMasker(8, 0.5)(x)
    kept = out != 0
    assert torch.equal(out[kept], x[kept])  # unmasked pixels are untouched
    # masked pixels are 0 in normalised space = the pixel mean in image space
    assert (out[~kept] == 0).all()
    assert (out[0, :, 30:, :] == 0).all() and (out[0, :, :, 40:] == 0).all()


def test_masking_runs_on_the_input_device_and_dtype():
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    assert BlockMasker(4, 0.5)(x).dtype == torch.float64


def test_photometric_is_drawn_per_image_and_keeps_padding():
    torch.manual_seed(3)
    mean, std = torch.tensor([100.0, 110.0, 120.0]), torch.tensor([50.0, 50.0, 50.0])
    aug = PhotometricAugmentation(jitter_prob=0.5, jitter_strength=0.4, blur_prob=0.5, blur_sigma=(0.5, 2.0))
    x = (torch.rand(32, 3, 24, 32) * 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)  # normalised pixels
    sizes = [(20, 30)] * 32
    x = x * padding_mask(x.shape, sizes, "cpu")
    out = aug(x, sizes, mean, std)
    changed = [(not torch.allclose(out[i], x[i], atol=1e-5)) for i in range(32)]
    assert 0 < sum(changed) < 32, "on/off must be drawn per image"
    assert (out[:, :, 20:, :] == 0).all() and (out[:, :, :, 30:] == 0).all()


def test_bad_ratio_or_block_is_rejected():
    for args in ((0, 0.5), (8, 1.0), (8, -0.1)):
        try:
            BlockMasker(*args)
        except ValueError as e:
            assert "MIC.MASK" in str(e)
        else:
            raise AssertionError(f"BlockMasker{args} accepted")


def _pixels(x, mean, std):
    return x * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)


def test_jitter_keeps_grey_grey_and_moves_colour():
    """Saturation and hue act on colour only: a grey image stays grey (brightness and
    contrast may change it), a coloured one changes its hue; values stay in [0, 255]."""
    torch.manual_seed(4)
    mean, std = torch.tensor([100.0, 110.0, 120.0]), torch.tensor([50.0, 50.0, 50.0])
    aug = PhotometricAugmentation(jitter_prob=1.0, jitter_strength=0.4, blur_prob=0.0, blur_sigma=(0.5, 2.0))
    grey = torch.rand(8, 1, 16, 16).expand(8, 3, 16, 16) * 255
    out = _pixels(aug((grey - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), [(16, 16)] * 8, mean, std), mean, std)
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-3) and torch.allclose(out[:, 1], out[:, 2], atol=1e-3)
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3
    red = torch.zeros(8, 3, 16, 16)
    red[:, 2] = 200  # BGR: red
    out = _pixels(aug((red - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), [(16, 16)] * 8, mean, std), mean, std)
    assert (out[:, :2].amax(dim=(1, 2, 3)) > 5).any(), "hue and saturation never moved a pure red"


def test_hue_rotation_follows_the_channel_order():
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0] = 200  # channel 0 only
    quarter = torch.tensor([0.25])
    as_bgr = rotate_hue(x, quarter, [2, 1, 0])  # channel 0 is blue
    as_rgb = rotate_hue(x, quarter, [0, 1, 2])  # channel 0 is red
    assert not torch.allclose(as_bgr, as_rgb)
    # a full turn is the identity, whatever the order
    assert torch.allclose(rotate_hue(x, torch.tensor([1.0]), [2, 1, 0]), x, atol=1e-3)


def test_masked_view_augments_first_then_masks():
    """A masked block is exactly the pixel mean even when the view is jittered and blurred."""
    cfg = tiny_cfg(mic=True)
    cfg.MIC.COLOR_JITTER_PROB, cfg.MIC.BLUR_PROB, cfg.MIC.MASK_BLOCK_SIZE = 1.0, 1.0, 8
    model = build_model(cfg)
    images = model.preprocess_image(make_inputs(2, with_instances=False))
    torch.manual_seed(5)
    view = model.mic.masked_view(model, images).tensor
    blocks = view.unfold(2, 8, 8).unfold(3, 8, 8)  # (N, C, H/8, W/8, 8, 8)
    zero = (blocks == 0).all(dim=-1).all(dim=-1).all(dim=1)
    assert 0.2 < zero.float().mean() < 0.8, "about half of the blocks are masked, exactly to 0"
    kept = ~zero.unsqueeze(1).expand_as(blocks[..., 0, 0])
    original = images.tensor.unfold(2, 8, 8).unfold(3, 8, 8)
    assert not torch.allclose(blocks[kept], original[kept]), "the kept blocks are augmented"
