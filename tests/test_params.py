import numpy as np
import torch

from feddm_hpc.params import ParamSpec, flatten, flatten_into, unflatten_into


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Linear(5, 3))


def test_flatten_unflatten_round_trip():
    model = _model()
    vec = flatten(model)
    spec = ParamSpec.from_model(model)
    assert vec.dtype == np.float32 and vec.size == spec.total == sum(p.numel() for p in model.parameters())
    # first entry is the conv weight, in order
    np.testing.assert_array_equal(vec[:36], model[0].weight.detach().numpy().reshape(-1))
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    assert not np.array_equal(flatten(other), vec)
    unflatten_into(vec, other)
    np.testing.assert_array_equal(flatten(other), vec)


def test_flatten_into_reuses_buffer_and_checks_size():
    model = _model()
    buf = np.zeros(ParamSpec.from_model(model).total, dtype=np.float32)
    assert flatten_into(model, buf) is buf
    try:
        unflatten_into(np.zeros(3, dtype=np.float32), model)
    except (ValueError, RuntimeError):
        pass
    else:
        raise AssertionError("size mismatch not detected")


def test_fingerprint_changes_with_shapes():
    a = ParamSpec.from_model(_model())
    b = ParamSpec.from_model(torch.nn.Sequential(torch.nn.Conv2d(1, 5, 3)))
    assert a.fingerprint() == ParamSpec.from_model(_model()).fingerprint()
    assert a.fingerprint() != b.fingerprint()
    assert "0.weight 4 1 3 3" in a.as_text()


def test_unflatten_accepts_a_read_only_vector_without_a_warning():
    """Round callbacks get read-only views of the global and EMA vectors (callbacks.RunView)."""
    import warnings

    model = torch.nn.Linear(3, 2)
    vector = flatten(model) + 1.0
    vector.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unflatten_into(vector, model)
    assert np.array_equal(flatten(model), vector)


def _reference_flat(model) -> np.ndarray:
    return np.concatenate([p.detach().float().reshape(-1).numpy() for p in model.parameters()])


def test_channels_last_parameters_flatten_and_load_in_their_own_layout():
    """The one-call paths split into the parameters' shapes, not their memory order: a
    channels_last conv weight (not contiguous) reads and writes the same logical values."""
    def conv_model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(5, 3))
    model = conv_model().to(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    np.testing.assert_array_equal(flatten(model), _reference_flat(model))
    target = np.arange(ParamSpec.from_model(model).total, dtype=np.float32)
    unflatten_into(target, model)
    np.testing.assert_array_equal(_reference_flat(model), target)
    assert model[0].weight.stride() == conv_model().to(memory_format=torch.channels_last)[0].weight.stride()


def test_parameters_of_several_dtypes_take_the_tensor_by_tensor_path():
    model = _model()
    model[2].to(torch.float64)
    target = np.linspace(-1, 1, ParamSpec.from_model(model).total).astype(np.float32)
    unflatten_into(target, model)
    assert model[2].weight.dtype == torch.float64
    np.testing.assert_array_equal(flatten(model), target)


def test_flatten_into_refuses_a_vector_of_another_size_before_writing():
    model = _model()
    out = np.full(ParamSpec.from_model(model).total + 1, 7.0, dtype=np.float32)
    try:
        flatten_into(model, out)
    except ValueError as exc:
        assert "vector has" in str(exc)
    else:
        raise AssertionError("size mismatch not detected")
    assert (out == 7.0).all()
