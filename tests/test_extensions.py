"""Extensions by import path (docs/extending.md, feddm_hpc/extend.py): `compression.uplink` and
`federation.algorithm` take `package.module:Name`, imported and checked where the codec or the
strategy is built (so by `feddm-hpc validate` and at train start-up), exit 2 naming the field on
a bad path; the examples/ extensions run under mpiexec and resume bit-identically."""
from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from feddm_hpc.compression import decode_payload, make_compressor
from feddm_hpc.config import CompressionConfig, ServerConfig, config_from_tree, load_config
from feddm_hpc.errors import ConfigError
from feddm_hpc.strategies import make_strategy

from conftest import ROOT, TINY, final_params, pythonpath_env, run_cli, straight_and_resumed

SIGN = "examples.sign_codec:SignCompressor"
NESTEROV = "examples.nesterov_strategy:NesterovServerMomentum"

USER_MODULE = '''
import numpy as np
from feddm_hpc.extend import HEADER_SIZE, ClientState, Compressor, Header, Strategy

NOT_A_CLASS = 3


class RawCodec(Compressor):
    name = "raw_user"
    codec_ids = (250,)
    lossy = False

    def _encode(self, x, rng):
        payload = self._new_payload(Header(250, 32, n=x.size), 4 * x.size)
        payload[HEADER_SIZE:].view("<f4")[:] = x
        return payload

    @classmethod
    def body_size(cls, header):
        return 4 * header.n

    @classmethod
    def decode_body(cls, header, body, out=None):
        values = body.view("<f4")
        if out is None:
            return values.astype(np.float32)
        out[:] = values
        return out


class ClashCodec(RawCodec):
    name = "clash"              # a different class on RawCodec's id


class BuiltinIdCodec(RawCodec):
    codec_ids = (3,)            # the package's quant codec


class NoIdsCodec(RawCodec):
    codec_ids = ()


class HalfCodec(Compressor):    # no hooks
    name = "half"
    codec_ids = (251,)


class Halving(Strategy):
    name = "halving"

    def apply(self, global_params, mean_update):
        return (global_params + np.float32(0.5) * mean_update).astype(np.float32)


class NoRule(Strategy):
    name = "no_rule"


class PerClient(Halving):
    name = "per_client"

    @property
    def client_state(self):
        return ClientState()
'''


@pytest.fixture(scope="module")
def user_pkg(tmp_path_factory):
    """A package of the test's own, `userext_pkg.mods`, on sys.path (as a user's would be)."""
    root = tmp_path_factory.mktemp("user")
    pkg = root / "userext_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mods.py").write_text(textwrap.dedent(USER_MODULE))
    (pkg / "broken.py").write_text("raise RuntimeError('the user module is broken')\n")
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


def _codec(path, **kw):
    return make_compressor(CompressionConfig(uplink=path, **kw))


# ---------------------------------------------------------------- config layer: syntax only

@pytest.mark.parametrize("field", ["federation.algorithm", "compression.uplink"])
def test_config_accepts_import_path_syntax_without_importing(field):
    section, name = field.split(".")
    cfg = config_from_tree({section: {name: "no.such.module:Thing"}})
    assert getattr(getattr(cfg, section), name) == "no.such.module:Thing"
    for bad in ("no.such.module", "a:b:c", "1pkg:X", "pkg:1X", "pkg.mod:"):
        with pytest.raises(ConfigError, match=rf"^{field}: invalid value .*import path"):
            config_from_tree({section: {name: bad}})


def test_other_choice_fields_take_no_import_path():
    with pytest.raises(ConfigError, match=r"^data.partition: invalid value"):
        config_from_tree({"data": {"partition": "pkg.mod:Scheme"}})


# ---------------------------------------------------------------- codecs

def test_user_codec_builds_encodes_and_decodes_by_its_id(user_pkg):
    codec = _codec("userext_pkg.mods:RawCodec")
    assert type(codec).__name__ == "RawCodec" and not codec.error_feedback
    x = np.random.default_rng(0).standard_normal(37).astype(np.float32)
    payload = codec.encode(x, 0, None)
    assert payload[3] == 250
    np.testing.assert_array_equal(decode_payload(payload, 37), x)
    assert _codec("userext_pkg.mods:RawCodec", lossless="zlib").lossless == "zlib"
    _codec("userext_pkg.mods:RawCodec")      # registering again is a no-op


@pytest.mark.parametrize("path, message", [
    ("userext_pkg.nope:RawCodec", r"cannot import module 'userext_pkg.nope'"),
    ("userext_pkg.broken:RawCodec", r"importing module 'userext_pkg.broken' .* failed: "
                                    r"RuntimeError: the user module is broken"),
    ("userext_pkg.mods:Missing", r"module 'userext_pkg.mods' has no name 'Missing'"),
    ("userext_pkg.mods:NOT_A_CLASS", r"is not a subclass of feddm_hpc.compression.base.Compressor"),
    ("userext_pkg.mods:Halving", r"is not a subclass of feddm_hpc.compression.base.Compressor"),
    ("userext_pkg.mods:HalfCodec", r"does not implement _encode, body_size, decode_body"),
    ("userext_pkg.mods:BuiltinIdCodec", r"codec id 3; a user codec's ids must be in 128-255"),
    ("userext_pkg.mods:NoIdsCodec", r"needs a class attribute codec_ids"),
])
def test_bad_user_codecs_name_the_field(user_pkg, path, message):
    with pytest.raises(ConfigError, match=rf"^compression.uplink: .*{message}"):
        _codec(path)


def test_a_codec_id_taken_by_another_class_is_refused(user_pkg):
    _codec("userext_pkg.mods:RawCodec")
    with pytest.raises(ConfigError, match=r"codec id 250, already taken by userext_pkg.mods.RawCodec"):
        _codec("userext_pkg.mods:ClashCodec")


def test_sign_codec_example_is_scaled_sign_with_error_feedback(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    codec = _codec(SIGN, error_feedback=True)
    x = np.random.default_rng(1).standard_normal(1001).astype(np.float32)
    payload = codec.encode(x, 7, None)
    assert payload.size == 32 + 4 + 126          # header, scale, ceil(1001 / 8) sign bytes
    scale = np.float32(np.abs(x).mean(dtype=np.float64))
    decoded = decode_payload(payload, 1001)
    np.testing.assert_array_equal(decoded, np.where(x >= 0, scale, -scale))
    np.testing.assert_array_equal(codec.state_dict()["residual/7"], x - decoded)


# ---------------------------------------------------------------- strategies

def test_user_strategy_builds_like_a_builtin(user_pkg):
    s = make_strategy("userext_pkg.mods:Halving", ServerConfig(), 2)
    np.testing.assert_array_equal(s.apply(np.ones(2, np.float32), np.ones(2, np.float32)), [1.5, 1.5])


@pytest.mark.parametrize("path, message", [
    ("userext_pkg.nope:Halving", r"cannot import module 'userext_pkg.nope'"),
    ("userext_pkg.mods:Missing", r"module 'userext_pkg.mods' has no name 'Missing'"),
    ("userext_pkg.mods:RawCodec", r"is not a subclass of feddm_hpc.strategies.base.Strategy"),
    ("userext_pkg.mods:NOT_A_CLASS", r"is not a subclass of feddm_hpc.strategies.base.Strategy"),
    ("userext_pkg.mods:NoRule", r"implements neither apply nor server_step"),
])
def test_bad_user_strategies_name_the_field(user_pkg, path, message):
    with pytest.raises(ConfigError, match=rf"^federation.algorithm: .*{message}"):
        make_strategy(path, ServerConfig(), 2)


def test_user_strategy_with_client_state_needs_static_placement(user_pkg):
    path = "userext_pkg.mods:PerClient"
    cfg = config_from_tree({"federation": {"algorithm": path}})
    with pytest.raises(ConfigError, match=r"^system.placement: .* needs system.placement: static"):
        make_strategy(path, cfg.server, 2, run_config=cfg)
    static = config_from_tree({"federation": {"algorithm": path}, "system": {"placement": "static"}})
    make_strategy(path, static.server, 2, run_config=static)


def test_nesterov_example_formula_and_state(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    s = make_strategy(NESTEROV, ServerConfig(lr=1.0, momentum=0.5), 1)
    w = s.apply(np.zeros(1, np.float32), np.ones(1, np.float32))     # v = 1, step = 0.5 + 1
    np.testing.assert_allclose(w, [1.5])
    w = s.apply(w, np.ones(1, np.float32))                           # v = 1.5, step = 0.75 + 1
    np.testing.assert_allclose(w, [3.25])
    restored = make_strategy(NESTEROV, ServerConfig(lr=1.0, momentum=0.5), 1)
    restored.load_state_dict(s.state_dict())
    np.testing.assert_array_equal(restored.velocity, [1.5])


# ---------------------------------------------------------------- the command line

@pytest.mark.parametrize("field, path, message", [
    ("compression.uplink", "userext_pkg.nope:X", "cannot import module 'userext_pkg.nope'"),
    ("compression.uplink", "userext_pkg.mods:Missing", "has no name 'Missing'"),
    ("compression.uplink", "userext_pkg.mods:Halving", "is not a subclass of"),
    ("federation.algorithm", "userext_pkg.nope:X", "cannot import module 'userext_pkg.nope'"),
    ("federation.algorithm", "userext_pkg.mods:Missing", "has no name 'Missing'"),
    ("federation.algorithm", "userext_pkg.mods:RawCodec", "is not a subclass of"),
])
def test_validate_exits_2_naming_the_field(user_pkg, field, path, message, capsys):
    """`feddm-hpc validate` in this process (cli.main, user_pkg on sys.path as PYTHONPATH would put
    it): one subprocess each cost ~5 s of torch imports; test_validate_accepts_the_examples below
    runs the real command line."""
    from feddm_hpc.cli import main

    code = main(["validate", str(TINY), "--set", f"{field}={path}"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: ") and message in lines[0], err


@pytest.mark.slow
def test_validate_accepts_the_examples():
    out = run_cli(["validate", str(TINY), "--set", f"compression.uplink={SIGN}",
                   "--set", f"federation.algorithm={NESTEROV}"], env_extra=pythonpath_env(ROOT))
    assert out.returncode == 0, out.stderr
    assert f"algorithm {NESTEROV}, uplink {SIGN}" in out.stdout


# Both examples/ extensions in the same runs: a lost codec residual or a lost server velocity
# each makes the resumed run differ from the straight one, so one pair of runs checks both.
BOTH_EXAMPLES = (f"compression.uplink={SIGN}", "compression.error_feedback=true",
                 f"federation.algorithm={NESTEROV}", "server.momentum=0.9")


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    """(straight, resumed) runs of both examples (conftest.straight_and_resumed: 2 rounds on one
    rank; 1 round at 2 ranks resumed to 2 at 3 ranks, final parameters asserted equal)."""
    tmp_path = tmp_path_factory.mktemp("examples")
    return straight_and_resumed(tmp_path, *BOTH_EXAMPLES), tmp_path / "split"


def _latest(run_dir):
    from feddm_hpc.rundir.checkpoint import latest_valid, load_checkpoint
    return load_checkpoint(latest_valid(run_dir / "checkpoints"))


@pytest.mark.slow
@pytest.mark.mpi
def test_sign_codec_runs_under_mpi_and_resumes_exactly(example_runs):
    run, split = example_runs
    assert np.array_equal(final_params(split), final_params(run))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    n = load_config(TINY).federation.num_clients
    params = final_params(run).size
    assert metrics[-1]["uplink_bytes"] == n * (32 + 4 + (params + 7) // 8)
    for d in (run, split):   # the error-feedback residuals were saved, and restored alike
        residuals = {k: v for k, v in _latest(d).clients.items() if k.startswith("residual/")}
        assert len(residuals) == n and any(np.any(v != 0) for v in residuals.values())
    a, b = _latest(run).clients, _latest(split).clients
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.mpi
def test_user_strategy_runs_under_mpi_and_resumes_exactly(example_runs):
    run, split = example_runs
    assert np.array_equal(final_params(split), final_params(run))
    a, b = _latest(run).strategy, _latest(split).strategy   # the server velocity, checkpointed
    assert set(a) == {"velocity"} and np.any(a["velocity"] != 0)
    np.testing.assert_array_equal(b["velocity"], a["velocity"])


def test_user_strategy_with_extra_uploads_is_refused_with_dp(user_pkg):
    mod = user_pkg / "userext_pkg" / "uploads.py"
    mod.write_text("from userext_pkg.mods import Halving\n\n\n"
                   "class Uploading(Halving):\n    name = 'uploading'\n    upload_names = ('extra',)\n")
    path = "userext_pkg.uploads:Uploading"
    cfg = config_from_tree({"federation": {"algorithm": path}, "privacy": {"clip_norm": 1.0}})
    with pytest.raises(ConfigError, match=r"^privacy.clip_norm: not with .*extra client uploads \(extra\)"):
        make_strategy(path, cfg.server, 2, run_config=cfg)
    plain = config_from_tree({"federation": {"algorithm": path}})
    assert make_strategy(path, plain.server, 2, run_config=plain).upload_names == ("extra",)
