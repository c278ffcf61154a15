from types import SimpleNamespace

import pytest
import torch

from feddm_hpc.diffusion.unet import build_unet, count_parameters


def cfg(**kw):
    base = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                attention_resolutions=(), dropout=0.0)
    base.update(kw)
    return SimpleNamespace(**base)


REFERENCE = dict(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                 attention_resolutions=(7,), dropout=0.1)


@pytest.mark.parametrize("channels,size,kw", [
    (1, 28, dict(channel_mults=(1, 2, 2), attention_resolutions=(7,))),
    (3, 32, dict(channel_mults=(1, 2, 2), attention_resolutions=(8,))),
    (1, 28, {}),
])
def test_output_shape_equals_input_shape(channels, size, kw):
    torch.manual_seed(0)
    model = build_unet(cfg(**kw), channels, size)
    x = torch.randn(2, channels, size, size)
    out = model(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_reference_parameter_count_is_plausible():
    torch.manual_seed(0)
    n = count_parameters(build_unet(SimpleNamespace(**REFERENCE), 1, 28))
    assert 0.5e6 < n < 2e6, n


def test_federated_state_is_exactly_the_parameters():
    model = build_unet(SimpleNamespace(**REFERENCE), 1, 28)
    assert list(model.buffers()) == []
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}


def test_same_seed_same_model_different_seed_different_model():
    def params(seed):
        torch.manual_seed(seed)
        return [p.detach().clone() for p in build_unet(cfg(), 1, 28).parameters()]
    a, b, c = params(3), params(3), params(4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_output_depends_on_timestep_once_trained_a_little():
    # The output convs start at zero, so perturb the weights before comparing timesteps.
    torch.manual_seed(0)
    model = build_unet(cfg(), 1, 16).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(1, 1, 16, 16)
    assert not torch.allclose(model(x, torch.tensor([1])), model(x, torch.tensor([500])))


@pytest.mark.parametrize("size,mults", [(28, (1, 2, 2, 2)), (30, (1, 2, 2)), (7, (1, 2))])
def test_image_size_not_divisible_raises(size, mults):
    with pytest.raises(ValueError, match="not divisible"):
        build_unet(cfg(channel_mults=mults), 1, size)


def test_attention_resolution_that_matches_no_level_raises():
    with pytest.raises(ValueError, match="attention_resolutions"):
        build_unet(cfg(attention_resolutions=(8,)), 1, 28)
