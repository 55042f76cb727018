import pytest
import torch
from torch import nn

from workbench.skinny_linear import MAX_SKINNY_ROWS, SkinnyLinear, use_skinny_linear


def twins(bias: bool) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    reference = nn.Linear(48, 80, bias=bias)
    skinny = nn.Linear(48, 80, bias=bias)
    skinny.load_state_dict(reference.state_dict())
    use_skinny_linear(skinny)
    return reference, skinny


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(48,), (1, 48), (2, 48), (1, 1, 48), (3, 5, 48), (MAX_SKINNY_ROWS + 1, 48)])
def test_skinny_linear_equals_linear(bias, shape):
    reference, skinny = twins(bias)
    x = torch.randn(*shape)
    expected, got = reference(x), skinny(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_skinny_linear_on_non_contiguous_input():
    reference, skinny = twins(bias=True)
    x = torch.randn(48, 4).t()  # [4, 48], column-major
    assert not x.is_contiguous()
    torch.testing.assert_close(skinny(x), reference(x), atol=1e-5, rtol=1e-5)


def test_skinny_linear_gradients_equal_linear():
    reference, skinny = twins(bias=True)
    x = torch.randn(2, 48, requires_grad=True)
    x_twin = x.detach().clone().requires_grad_(True)
    reference(x).square().sum().backward()
    skinny(x_twin).square().sum().backward()
    torch.testing.assert_close(x_twin.grad, x.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(skinny.weight.grad, reference.weight.grad, atol=1e-5, rtol=1e-5)


def test_use_skinny_linear_switches_only_plain_linears_and_keeps_weights():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)), nn.Embedding(3, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_skinny_linear(model) == 2
    assert isinstance(model[0], SkinnyLinear) and isinstance(model[2][0], SkinnyLinear)
    assert type(model[3]) is nn.Embedding
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert use_skinny_linear(model) == 0  # already switched
