import torch

from mic_det.modeling import GradientReversal, scale_gradient


def test_forward_is_identity_and_backward_is_reversed_and_scaled():
    x = torch.randn(4, 3, requires_grad=True)
    y = GradientReversal(0.25)(x)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.25 * torch.arange(3.0).expand(4, 3))


def test_scale_gradient_keeps_sign():
    x = torch.ones(2, requires_grad=True)
    scale_gradient(x, 0.1).sum().backward()
    assert torch.allclose(x.grad, torch.full((2,), 0.1))


def test_negative_weight_is_rejected():
    try:
        GradientReversal(-1.0)
    except ValueError as e:
        assert "-1.0" in str(e)
    else:
        raise AssertionError("negative GRL weight accepted")
