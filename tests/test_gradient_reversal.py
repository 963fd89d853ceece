import torch

from mic_det.modeling import scale_gradient


def test_forward_is_identity_and_a_negative_scale_reverses_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    y = scale_gradient(x, -0.25)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.25 * torch.arange(3.0).expand(4, 3))


def test_scale_gradient_keeps_sign():
    x = torch.ones(2, requires_grad=True)
    scale_gradient(x, 0.1).sum().backward()
    assert torch.allclose(x.grad, torch.full((2,), 0.1))
