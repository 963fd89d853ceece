import math

import torch

from mic_det.modeling import BlockMasker
from mic_det.modeling.photometric import PhotometricAugmentation, padding_mask


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
    x = torch.randn(32, 3, 24, 32)
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
