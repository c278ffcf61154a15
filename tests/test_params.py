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
