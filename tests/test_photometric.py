"""The photometric augmentation of the student's view, part by part: the Gaussian blur,
grey, contrast, saturation and hue, the per-image draws and ranges, and the whole
(normalised in, normalised out, padding zero)."""
import math

import pytest
import torch

import mic_det.modeling.photometric as photometric
from mic_det.modeling.photometric import (
    PhotometricAugmentation,
    adjust_contrast,
    adjust_saturation,
    gaussian_blur,
    grey,
    jitter_factors,
    padding_mask,
    rotate_hue,
)

BGR = [2, 1, 0]
MEAN, STD = torch.tensor([100.0, 110.0, 120.0]), torch.tensor([50.0, 60.0, 70.0])


def normalise(pixels):
    return (pixels - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


def pixels_of(x):
    return x * STD.view(1, 3, 1, 1) + MEAN.view(1, 3, 1, 1)


def test_blur_of_a_point_is_the_normalised_gaussian_of_each_images_sigma():
    x = torch.zeros(2, 3, 31, 31, dtype=torch.float64)
    x[:, :, 15, 15] = 1.0
    sigmas = torch.tensor([0.8, 1.5])
    out = gaussian_blur(x, sigmas, max_sigma=1.5)
    radius = math.ceil(4 * 1.5)
    for n, sigma in enumerate(sigmas.tolist()):
        g = torch.tensor([math.exp(-0.5 * (r / sigma) ** 2) for r in range(-radius, radius + 1)], dtype=torch.float64)
        g = g / g.sum()
        expected = torch.zeros(31, 31, dtype=torch.float64)
        expected[15 - radius : 16 + radius, 15 - radius : 16 + radius] = torch.outer(g, g)
        for c in range(3):
            torch.testing.assert_close(out[n, c], expected, rtol=0, atol=1e-12)


def test_blur_keeps_a_constant_image_constant_up_to_its_borders():
    """Reflect padding: no dark frame, which zero padding would leave."""
    x = torch.full((1, 3, 12, 20), 7.0)
    torch.testing.assert_close(gaussian_blur(x, torch.tensor([1.1]), 1.15), x)


def test_padding_mask():
    m = padding_mask((2, 3, 4, 5), [(4, 5), (2, 3)], "cpu")
    assert m.shape == (2, 1, 4, 5) and m[0].all()
    assert m[1, 0, :2, :3].all() and m[1].sum() == 6


def test_grey_uses_the_luma_weights_in_the_images_channel_order():
    x = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)  # B, G, R
    assert grey(x, BGR).item() == pytest.approx(0.299 * 30 + 0.587 * 20 + 0.114 * 10)
    assert grey(x, [0, 1, 2]).item() == pytest.approx(0.299 * 10 + 0.587 * 20 + 0.114 * 30)


def test_contrast_scales_around_the_mean_grey_of_the_real_area():
    x = torch.rand(2, 3, 6, 8) * 255
    inside = padding_mask(x.shape, [(6, 8), (4, 5)], "cpu").float()
    x = x * inside
    flat = adjust_contrast(x, torch.zeros(2, 1, 1, 1), BGR, inside)
    for n, (h, w) in enumerate([(6, 8), (4, 5)]):
        mean = grey(x[n : n + 1], BGR)[0, 0, :h, :w].mean()
        torch.testing.assert_close(flat[n], mean.expand(3, 6, 8))
    torch.testing.assert_close(adjust_contrast(x, torch.ones(2, 1, 1, 1), BGR, inside), x)
    doubled = adjust_contrast(x, torch.full((2, 1, 1, 1), 2.0), BGR, inside)
    torch.testing.assert_close(doubled - flat, 2 * (x - flat))


def test_saturation_scales_around_each_pixels_grey():
    x = torch.rand(2, 3, 5, 5) * 255
    g = grey(x, BGR)
    torch.testing.assert_close(adjust_saturation(x, torch.zeros(2, 1, 1, 1), BGR), g.expand_as(x))
    torch.testing.assert_close(adjust_saturation(x, torch.ones(2, 1, 1, 1), BGR), x)
    torch.testing.assert_close(adjust_saturation(x, torch.full((2, 1, 1, 1), 3.0), BGR) - g, 3 * (x - g))


def yiq(x, channel_of):
    rgb = x[:, torch.tensor(channel_of).argsort()]  # back to R, G, B
    return torch.einsum("ij,njhw->nihw", torch.tensor(photometric._TO_YIQ, dtype=x.dtype), rgb)


def test_hue_rotation_turns_the_chroma_plane_and_keeps_luma():
    x = torch.rand(3, 3, 4, 4, dtype=torch.float64) * 255
    turns = torch.tensor([0.25, -0.1, 0.5], dtype=torch.float64)
    out = rotate_hue(x, turns, BGR)
    a, b = yiq(x, BGR), yiq(out, BGR)
    torch.testing.assert_close(b[:, 0], a[:, 0])  # luma kept
    angle = 2 * math.pi * turns.view(3, 1, 1)
    torch.testing.assert_close(b[:, 1], a[:, 1] * angle.cos() - a[:, 2] * angle.sin())
    torch.testing.assert_close(b[:, 2], a[:, 1] * angle.sin() + a[:, 2] * angle.cos())
    torch.testing.assert_close(rotate_hue(out, -turns, BGR), x)
    # the same rotation read in RGB order is another one for the same tensor
    assert not torch.allclose(rotate_hue(x, turns, [0, 1, 2]), out)


def test_jitter_factors_cover_their_range_where_on_and_are_one_elsewhere():
    torch.manual_seed(0)
    on = (torch.arange(4000) % 2).float()
    f = jitter_factors(4000, 0.3, on).view(-1)
    assert f.shape == (4000,) and (f[on == 0] == 1).all()
    g = f[on == 1]
    assert g.min() >= 0.7 and g.max() <= 1.3 and g.min() < 0.71 and g.max() > 1.29
    assert abs(g.mean().item() - 1) < 0.02


def test_brightness_scales():
    x = torch.rand(2, 3, 4, 4) * 100
    f = torch.tensor([0.5, 1.5]).view(2, 1, 1, 1)
    torch.testing.assert_close(photometric.adjust_brightness(x, f), x * f)


OPS = ("adjust_brightness", "adjust_contrast", "adjust_saturation", "rotate_hue")


def test_jitter_applies_all_four_in_a_random_order_and_stays_in_range(monkeypatch):
    torch.manual_seed(1)
    aug = PhotometricAugmentation(1.0, 0.4, 0.0, (0.15, 1.15), "BGR")
    x = torch.rand(4, 3, 6, 6) * 255
    inside = torch.ones(4, 1, 6, 6)
    calls = []
    for name in OPS + ("jitter_factors",):
        real = getattr(photometric, name)
        monkeypatch.setattr(photometric, name, lambda *a, real=real, name=name: (calls.append((name, a)), real(*a))[1])
    orders = set()
    for _ in range(8):
        calls.clear()
        out = aug.jitter(x, inside)
        assert out.min() >= 0 and out.max() <= 255
        ops = [(name, a) for name, a in calls if name != "jitter_factors"]
        assert sorted(name for name, _ in ops) == sorted(OPS)
        assert sum(name == "jitter_factors" for name, _ in calls) == 4  # one draw per operation
        for name, a in ops:  # every colour operation is told the channel order
            if name != "adjust_brightness":
                assert a[2] == [2, 1, 0], name
        hue_turns = next(a[1] for name, a in ops if name == "rotate_hue")
        assert hue_turns.abs().max() <= 0.4 and (hue_turns != 0).all()
        orders.add(tuple(name for name, _ in ops))
    assert len(orders) > 1, "the order of the operations is drawn per call"


def test_black_stays_black_and_jitter_alone_changes_the_view():
    torch.manual_seed(7)
    aug = PhotometricAugmentation(1.0, 0.4, 0.0, (0.15, 1.15), "BGR")
    black = torch.zeros(3, 3, 6, 6)
    assert (aug.jitter(black, torch.ones(3, 1, 6, 6)) == 0).all()
    x = normalise(torch.rand(2, 3, 6, 6) * 200 + 20)
    out = aug(x, [(6, 6)] * 2, MEAN, STD)
    assert all((out[i] - x[i]).abs().max() > 1e-2 for i in range(2))


def test_jitter_off_leaves_the_image_and_on_changes_it():
    torch.manual_seed(2)
    x = torch.rand(6, 3, 8, 8) * 200 + 20
    inside = torch.ones(6, 1, 8, 8)
    torch.testing.assert_close(PhotometricAugmentation(0.0, 0.4, 0.0, (0.15, 1.15), "BGR").jitter(x, inside), x,
                               atol=1e-3, rtol=0)
    out = PhotometricAugmentation(1.0, 0.4, 0.0, (0.15, 1.15), "BGR").jitter(x, inside)
    assert all((out[i] - x[i]).abs().max() > 1 for i in range(6))


def test_blur_is_drawn_per_image_with_sigma_in_its_range(monkeypatch):
    seen = []
    real = photometric.gaussian_blur
    monkeypatch.setattr(photometric, "gaussian_blur", lambda x, s, m: (seen.append((s, m)), real(x, s, m))[1])
    torch.manual_seed(3)
    x = torch.rand(400, 3, 6, 6) * 255
    out = PhotometricAugmentation(0.0, 0.2, 0.5, (0.3, 1.2), "BGR").blur(x)
    (sigmas, max_sigma), = seen
    assert max_sigma == 1.2 and sigmas.min() >= 0.3 and sigmas.max() <= 1.2
    assert sigmas.min() < 0.35 and sigmas.max() > 1.15
    blurred = torch.tensor([not torch.equal(out[i], x[i]) for i in range(400)])
    assert 0.4 < blurred.float().mean() < 0.6
    always = PhotometricAugmentation(0.0, 0.2, 1.0, (0.3, 1.2), "BGR").blur(x[:20])
    assert all(not torch.equal(always[i], x[i]) for i in range(20))


def test_whole_augmentation_in_normalised_space_keeps_padding_zero():
    torch.manual_seed(4)
    sizes = [(8, 10), (5, 6)]
    pixels = torch.rand(2, 3, 8, 10) * 255
    x = normalise(pixels) * padding_mask((2, 3, 8, 10), sizes, "cpu")
    # nothing on: back to normalised space unchanged, only blur on: exactly the blur
    none = PhotometricAugmentation(0.0, 0.2, 0.0, (0.15, 1.15), "BGR")
    torch.testing.assert_close(none(x, sizes, MEAN, STD), x, atol=1e-5, rtol=0)
    out = PhotometricAugmentation(1.0, 0.3, 1.0, (0.5, 1.0), "BGR")(x, sizes, MEAN, STD)
    assert (out[1, :, 5:, :] == 0).all() and (out[1, :, :, 6:] == 0).all()
    p = pixels_of(out)[0]
    assert p.min() >= -1e-3 and p.max() <= 255 + 1e-3
    assert not torch.allclose(out[0], x[0], atol=1e-2)


def test_only_blur_is_exactly_the_blur(monkeypatch):
    torch.manual_seed(5)
    x = normalise(torch.rand(2, 3, 8, 8) * 255)
    aug = PhotometricAugmentation(0.0, 0.2, 1.0, (0.5, 1.0), "BGR")
    torch.manual_seed(6)
    out = aug(x, [(8, 8)] * 2, MEAN, STD)
    torch.manual_seed(6)
    expected = normalise(aug.blur(pixels_of(x)))
    torch.testing.assert_close(out, expected)


def test_channel_order_must_be_known():
    with pytest.raises(ValueError, match="INPUT.FORMAT.*'YUV'"):
        PhotometricAugmentation(0.5, 0.2, 0.5, (0.15, 1.15), "YUV")


def test_rgb_input_is_augmented_as_the_same_image_in_bgr():
    """INPUT.FORMAT "RGB": luma and hue are taken on the right channels, so augmenting an
    RGB image gives the channel-reversed result of augmenting it in BGR."""
    torch.manual_seed(0)
    x_rgb = torch.rand(2, 3, 12, 16) * 255
    mean_rgb, std = torch.tensor([123.7, 116.3, 103.5]), torch.tensor([58.4, 57.1, 57.4])
    sizes = [(12, 16), (10, 14)]
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        PhotometricAugmentation(1.0, 0.4, 0.0, (0.15, 1.15), "rgb")
    norm = lambda x, mean, sd: (x - mean.view(1, 3, 1, 1)) / sd.view(1, 3, 1, 1)  # noqa: E731
    torch.manual_seed(1)
    out_rgb = PhotometricAugmentation(1.0, 0.4, 0.0, (0.15, 1.15), "RGB")(norm(x_rgb, mean_rgb, std), sizes, mean_rgb, std)
    torch.manual_seed(1)
    flip = [2, 1, 0]
    out_bgr = PhotometricAugmentation(1.0, 0.4, 0.0, (0.15, 1.15), "BGR")(
        norm(x_rgb[:, flip], mean_rgb[flip], std[flip]), sizes, mean_rgb[flip], std[flip])
    torch.testing.assert_close(out_rgb, out_bgr[:, flip], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out_rgb, norm(x_rgb, mean_rgb, std), atol=1e-2)  # it did augment
