import numpy as np
import pytest

from feddm_hpc.errors import CheckpointError
from feddm_hpc.rundir import checkpoint as ckpt


def _data(round_index=3, n=1000):
    rng = np.random.default_rng(round_index)
    return ckpt.CheckpointData(
        round=round_index, config_yaml="seed: 0\n", params=rng.standard_normal(n).astype(np.float32),
        ema=rng.standard_normal(n).astype(np.float32), spec_text="w 1000", param_fingerprint="abc",
        strategy={"m": np.ones(n, dtype=np.float32)}, clients={"residual/7": np.full(n, 2.0, np.float32)},
        metrics_lines=['{"round": 0}', '{"round": 1}'], image_shape=(1, 28, 28))


def test_round_trip(tmp_path):
    data = _data()
    path = ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(3), data)
    assert path.name == "round-000003.h5"
    back = ckpt.load_checkpoint(path)
    np.testing.assert_array_equal(back.params, data.params)
    np.testing.assert_array_equal(back.ema, data.ema)
    np.testing.assert_array_equal(back.strategy["m"], data.strategy["m"])
    np.testing.assert_array_equal(back.clients["residual/7"], data.clients["residual/7"])
    assert back.round == 3 and back.config_yaml == "seed: 0\n" and back.metrics_lines == data.metrics_lines
    assert back.image_shape == (1, 28, 28)
    assert not list(tmp_path.glob("*.tmp"))
    assert "checksum: ok" in ckpt.describe(path)


def test_truncated_file_is_reported_and_skipped(tmp_path):
    good = ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(1), _data(1))
    bad = ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(2), _data(2))
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="round-000002.h5"):
        ckpt.load_checkpoint(bad)
    warnings = []
    assert ckpt.latest_valid(tmp_path, warn=warnings.append) == good
    assert warnings and "round-000002.h5" in warnings[0]


def test_flipped_byte_fails_checksum(tmp_path):
    path = ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(5), _data(5))
    with_params = ckpt.load_checkpoint(path).params
    raw = bytearray(path.read_bytes())
    # Flip one byte inside the parameter data (find it by its float32 bytes).
    needle = with_params[500:504].tobytes()
    at = raw.find(needle)
    assert at > 0
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.load_checkpoint(path)
    assert ckpt.latest_valid(tmp_path) is None
    assert "MISMATCH" in ckpt.describe(path)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "round-000001.h5"
    p.write_text("hello")
    with pytest.raises(CheckpointError, match="round-000001.h5"):
        ckpt.load_checkpoint(p)
    with pytest.raises(CheckpointError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "missing.h5")


def test_prune_keeps_last_and_removes_temporaries(tmp_path):
    for r in range(5):
        ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(r), _data(r, n=10))
    (tmp_path / "round-000009.h5.tmp").write_bytes(b"partial")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)][0] == "round-000004.h5"
    ckpt.prune(tmp_path, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["round-000004.h5", "round-000003.h5"]
    assert not list(tmp_path.glob("*.tmp"))


def test_full_disk_is_a_clear_error_and_keeps_earlier_checkpoints(tmp_path):
    """A real 1 MB tmpfs (root) fills up mid-write: CheckpointError, no partial file, nothing lost."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        small = _data(1, n=1000)
        first = ckpt.save_checkpoint(mnt / ckpt.checkpoint_name(1), small)
        with pytest.raises(CheckpointError, match=r"round-000002.h5: cannot write checkpoint.*intact"):
            ckpt.save_checkpoint(mnt / ckpt.checkpoint_name(2), _data(2, n=400_000))  # 3.2 MB
        assert not list(mnt.glob("*.tmp"))
        assert ckpt.latest_valid(mnt) == first
        np.testing.assert_array_equal(ckpt.load_checkpoint(first).params, small.params)
    finally:
        subprocess.run(["umount", str(mnt)])


@pytest.fixture
def legacy_printing():
    """numpy 1.x-style reprs (np.int64(3) prints as 3); the print options are restored after."""
    saved = np.get_printoptions()
    np.set_printoptions(legacy="1.25")
    try:
        yield
    finally:
        np.set_printoptions(**saved)


def test_checksum_does_not_depend_on_numpy_print_options(tmp_path, legacy_printing):
    """Attribute reprs change with numpy's version and print options; the checksum must not."""
    saved = np.get_printoptions()
    np.set_printoptions(legacy=False)
    try:
        written_default = ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(1), _data(1))
    finally:
        np.set_printoptions(**saved)
    assert repr(np.int64(3)) == "3"  # the fixture is in force
    assert ckpt.load_checkpoint(written_default).round == 1
    written_legacy = ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(2), _data(2))
    np.set_printoptions(legacy=False)
    assert ckpt.load_checkpoint(written_legacy).round == 2
    np.set_printoptions(legacy="1.25")
    # A bit flip is still detected under either printing.
    raw = bytearray(written_legacy.read_bytes())
    at = raw.find(_data(2).params[500:504].tobytes())
    raw[at] ^= 0x01
    written_legacy.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.load_checkpoint(written_legacy)


def _legacy_digest(f) -> str:
    """The checksum of files written before the canonical digest: repr() of the attributes."""
    import hashlib

    import h5py

    h = hashlib.sha256()
    for key in sorted(k for k in f.attrs if k != "checksum"):
        h.update(key.encode())
        h.update(repr(f.attrs[key]).encode())

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            data = obj[()]
            h.update(name.encode())
            if isinstance(data, bytes):
                h.update(data)
            else:
                arr = np.ascontiguousarray(data)
                h.update(str(arr.dtype).encode() + str(arr.shape).encode())
                h.update(arr.tobytes())
    f.visititems(visit)
    return h.hexdigest()


def _make_old_format(path, legacy=False):
    """Rewrites a fresh checkpoint as the previous code wrote it: no checksum scheme attribute,
    the repr-based digest (computed under numpy's default or its 1.x-style printing)."""
    import h5py

    saved = np.get_printoptions()
    np.set_printoptions(legacy="1.25" if legacy else False)
    try:
        with h5py.File(path, "r+") as f:
            for key in [k for k in f.attrs if k not in
                        ("format", "version", "round", "config_yaml", "param_fingerprint",
                         "rng_scheme", "image_shape", "checksum")]:
                del f.attrs[key]
            f.attrs["checksum"] = _legacy_digest(f)
    finally:
        np.set_printoptions(**saved)


@pytest.mark.parametrize("written_legacy", [False, True], ids=["numpy2-repr", "numpy1-repr"])
def test_old_format_checkpoint_still_loads_and_flips_are_detected(tmp_path, written_legacy):
    data = _data(4)
    path = ckpt.save_checkpoint(tmp_path / ckpt.checkpoint_name(4), data)
    _make_old_format(path, legacy=written_legacy)
    back = ckpt.load_checkpoint(path)
    np.testing.assert_array_equal(back.params, data.params)
    assert "checksum: ok" in ckpt.describe(path)
    raw = bytearray(path.read_bytes())
    at = raw.find(data.params[500:504].tobytes())
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.load_checkpoint(path)


def test_the_format_attribute_is_the_documented_contract():
    """DESIGN.md and docs/run-directory.md name this string; every checkpoint ever written carries
    it, so a rename of the module must not change it."""
    from feddm_hpc.rundir.checkpoint import FORMAT
    assert FORMAT == "feddm_hpc.checkpoint/1"
