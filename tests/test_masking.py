import math

import torch
from detectron2.modeling import build_model

from conftest import make_inputs, tiny_cfg
from mic_det.modeling import BlockMasker


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
    for dtype in (torch.float64, torch.bfloat16):  # a float32 mask would promote bfloat16
        x = torch.randn(1, 3, 16, 16, dtype=dtype)
        assert BlockMasker(4, 0.5)(x).dtype == dtype
    assert BlockMasker(4, 0.5).sample_masks(2, 8, 8, "cpu", torch.float16).dtype == torch.float16


def test_edge_settings_are_accepted():
    """1-pixel blocks and a ratio of 0 (nothing masked) are valid settings."""
    assert BlockMasker(1, 0.0)(torch.ones(1, 3, 4, 4)).eq(1).all()
    assert BlockMasker(1, 0.99).block_size == 1


def test_bad_ratio_or_block_is_rejected():
    for args in ((0, 0.5), (8, 1.0), (8, -0.1)):
        try:
            BlockMasker(*args)
        except ValueError as e:
            assert "MIC.MASK" in str(e)
        else:
            raise AssertionError(f"BlockMasker{args} accepted")


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
