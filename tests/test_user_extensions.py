"""Extensions by import path for datasets, models and round callbacks (docs/extending.md,
feddm_hpc/extend.py): `data.dataset`, `model.name` and `logging.callbacks` take
`package.module:Name`, imported and checked on every rank where the object is built, exit 2
naming the field on a bad one; the examples/ dataset loader and callback (with a user model)
run under mpiexec and resume bit-identically."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from feddm_hpc.config import config_from_tree
from feddm_hpc.data import load_dataset
from feddm_hpc.diffusion.parameterization import build_model
from feddm_hpc.errors import ConfigError, DataError
from feddm_hpc.federation.callbacks import user_callbacks

from conftest import ROOT, TINY, final_params, straight_and_resumed

CSV = "examples.pixel_csv_dataset:load_pixel_csv"
CSV_LOG = "examples.round_csv_log:RoundCsvLog"

USER_MODULE = '''
import numpy as np
import torch
from torch import nn
from feddm_hpc.extend import DataError, RoundCallback


def stripes(path, split):
    """16 images of 8x8 RGB: stripes whose class is the stripe's row (0-3)."""
    images = np.zeros((16, 8, 8, 3), np.uint8)
    labels = np.arange(16) % 4
    for i, c in enumerate(labels):
        images[i, 2 * c:2 * c + 2] = 40 + 10 * i
    return images, labels, 5


def floats(path, split):
    return np.full((4, 8, 8), 0.5), None, None


def train_only(path, split):
    if split != "train":
        raise KeyError(split)
    return stripes(path, split)


def missing_file(path, split):
    raise DataError(f"{path}/data.bin: file not found")


def not_a_tuple(path, split):
    return np.zeros((4, 8, 8), np.uint8)


def int16_images(path, split):
    return np.zeros((4, 8, 8), np.int16), None, None


def too_few_classes(path, split):
    return np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 2, 3]), 2


def one_argument(path):
    return stripes(path, "train")


NOT_CALLABLE = 3


class TinyDenoiser(nn.Module):
    def __init__(self, image_channels, image_size, width=8):
        super().__init__()
        self.inp = nn.Conv2d(image_channels + 1, width, 3, padding=1)
        self.out = nn.Conv2d(width, image_channels, 3, padding=1)

    def forward(self, x, t):
        tt = (t.float() / 100.0)[:, None, None, None].expand(-1, 1, *x.shape[2:])
        return self.out(torch.relu(self.inp(torch.cat([x, tt], 1))))


class WrongShape(TinyDenoiser):
    def forward(self, x, t):
        return super().forward(x, t)[:, :, :-1]


class WithBatchNorm(TinyDenoiser):
    def __init__(self, image_channels, image_size):
        super().__init__(image_channels, image_size)
        self.norm = nn.BatchNorm2d(8)


class Float64(TinyDenoiser):
    def __init__(self, image_channels, image_size):
        super().__init__(image_channels, image_size)
        self.double()


class Counter(RoundCallback):
    seen = []

    def after_round(self, view, round_index, record):
        Counter.seen.append(round_index)
        return False


class DoesNothing(RoundCallback):
    pass


class NeedsArgument(Counter):
    def __init__(self, where):
        self.where = where
'''


@pytest.fixture(scope="module")
def user_pkg(tmp_path_factory):
    """A package of the test's own, `userext2_pkg.mods`, on sys.path (as a user's would be)."""
    root = tmp_path_factory.mktemp("user")
    pkg = root / "userext2_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mods.py").write_text(textwrap.dedent(USER_MODULE))
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))


# ---------------------------------------------------------------- config layer: syntax only

@pytest.mark.parametrize("field", ["data.dataset", "model.name"])
def test_config_accepts_import_path_syntax_without_importing(field):
    section, name = field.split(".")
    cfg = config_from_tree({section: {name: "no.such.module:Thing"}})
    assert getattr(getattr(cfg, section), name) == "no.such.module:Thing"
    with pytest.raises(ConfigError, match=rf"^{field}: invalid value .*import path"):
        config_from_tree({section: {name: "no.such.module"}})


def test_config_callbacks_are_a_list_of_import_paths():
    cfg = config_from_tree({"logging": {"callbacks": ["a.b:C", "d:E"]}})
    assert cfg.logging.callbacks == ("a.b:C", "d:E")
    with pytest.raises(ConfigError, match=r"^logging.callbacks: 'a.b' is not an import path"):
        config_from_tree({"logging": {"callbacks": ["a.b"]}})
    with pytest.raises(ConfigError, match=r"^logging.callbacks: expected a list of strings"):
        config_from_tree({"logging": {"callbacks": "a.b:C"}})


def test_model_options_only_for_other_models_and_dense_only():
    cfg = config_from_tree({"model": {"name": "a:B", "options": {"width": 4, "mults": [1, 2]}}})
    assert cfg.model.options == {"width": 4, "mults": [1, 2]}
    with pytest.raises(ConfigError, match=r"^model.options: constructor arguments of a model"):
        config_from_tree({"model": {"options": {"width": 4}}})
    with pytest.raises(ConfigError, match=r"^model.parameterization: lowrank .* needs dense"):
        config_from_tree({"model": {"name": "a:B", "parameterization": "lowrank", "lowrank_rank": 1}})
    with pytest.raises(ConfigError, match=r"^model.options: expected a mapping"):
        config_from_tree({"model": {"name": "a:B", "options": [1]}})


# ---------------------------------------------------------------- datasets

def test_user_dataset_loads_like_a_builtin(user_pkg):
    ds = load_dataset("userext2_pkg.mods:stripes", None, "train")
    assert ds.images.shape == (16, 8, 8, 3) and ds.images.dtype == np.uint8
    assert ds.num_classes == 5 and ds.labels.dtype == np.int64 and ds.name == "userext2_pkg.mods:stripes"
    again = load_dataset("userext2_pkg.mods:stripes", None, "train", subset=6, seed=3)
    assert len(again) == 6 and again.checksum == load_dataset(
        "userext2_pkg.mods:stripes", None, "train", subset=6, seed=3).checksum
    floats = load_dataset("userext2_pkg.mods:floats", None, "train")
    assert floats.images.shape == (4, 8, 8, 1) and floats.images.max() == 128 and floats.labels is None


@pytest.mark.parametrize("name, error, message", [
    ("userext2_pkg.nope:x", ConfigError, r"cannot import module 'userext2_pkg.nope'"),
    ("userext2_pkg.mods:missing", ConfigError, r"module 'userext2_pkg.mods' has no name 'missing'"),
    ("userext2_pkg.mods:NOT_CALLABLE", ConfigError, r"is not a function taking \(path, split\)"),
    ("userext2_pkg.mods:TinyDenoiser", ConfigError, r"is not a function taking \(path, split\)"),
    ("userext2_pkg.mods:one_argument", ConfigError, r"does not take the arguments \(path, split\)"),
    ("userext2_pkg.mods:not_a_tuple", ConfigError, r"returned ndarray, not a tuple"),
    ("userext2_pkg.mods:int16_images", DataError, r"split 'train': `images` must be uint8 or float"),
    ("userext2_pkg.mods:too_few_classes", ConfigError, r"num_classes 2 for labels up to 3"),
    ("userext2_pkg.mods:train_only", DataError, r"failed loading split 'test' .*KeyError"),
])
def test_bad_user_datasets_name_the_field(user_pkg, name, error, message):
    split = "test" if "train_only" in name else "train"
    with pytest.raises(error, match=rf"^data.dataset: .*{message}"):
        load_dataset(name, None, split)


def test_a_user_loaders_own_data_error_passes_through(user_pkg):
    with pytest.raises(DataError, match=r"^/nowhere/data.bin: file not found"):
        load_dataset("userext2_pkg.mods:missing_file", "/nowhere", "train")


def test_pixel_csv_example_reads_the_kaggle_layout(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    rows = np.arange(3 * 16).reshape(3, 16) % 256
    (tmp_path / "train.csv").write_text("label," + ",".join(f"pixel{i}" for i in range(16)) + "\n"
                                        + "".join(f"{i % 2}," + ",".join(map(str, r)) + "\n"
                                                  for i, r in enumerate(rows)))
    ds = load_dataset(CSV, str(tmp_path), "train")
    np.testing.assert_array_equal(ds.images[..., 0], rows.reshape(3, 4, 4))
    np.testing.assert_array_equal(ds.labels, [0, 1, 0])
    with pytest.raises(DataError, match=r"test.csv: file not found"):
        load_dataset(CSV, str(tmp_path), "test")


# ---------------------------------------------------------------- models

def _model_cfg(name, **options):
    return config_from_tree({"model": {"name": name, "options": options}}).model


def test_user_model_builds_under_the_init_seed(user_pkg):
    torch.manual_seed(0)
    a = build_model(_model_cfg("userext2_pkg.mods:TinyDenoiser", width=4), 3, 8)
    torch.manual_seed(0)
    b = build_model(_model_cfg("userext2_pkg.mods:TinyDenoiser", width=4), 3, 8)
    assert a.inp.out_channels == 4
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.training    # the protocol check's forward pass ran in eval mode and restored it


@pytest.mark.parametrize("name, options, message", [
    ("userext2_pkg.nope:M", {}, r"cannot import module 'userext2_pkg.nope'"),
    ("userext2_pkg.mods:stripes", {}, r"is not a subclass of torch.nn.modules.module.Module"),
    ("userext2_pkg.mods:TinyDenoiser", {"depth": 2}, r"building .* model.options \{'depth': 2\} "
                                                     r"failed: TypeError"),
    ("userext2_pkg.mods:WrongShape", {}, r"returned \(2, 3, 7, 8\) for a \[2, 3, 8, 8\] batch"),
    ("userext2_pkg.mods:WithBatchNorm", {}, r"layer norm keeps running statistics"),
    ("userext2_pkg.mods:Float64", {}, r"parameters of dtype torch.float64"),
])
def test_bad_user_models_name_the_field(user_pkg, name, options, message):
    with pytest.raises(ConfigError, match=rf"^model.name: .*{message}"):
        build_model(_model_cfg(name, **options), 3, 8)


# ---------------------------------------------------------------- callbacks

def test_user_callbacks_build_in_order(user_pkg):
    built = user_callbacks(["userext2_pkg.mods:Counter", "userext2_pkg.mods:Counter"])
    assert [type(c).__name__ for c in built] == ["Counter", "Counter"]


@pytest.mark.parametrize("name, message", [
    ("userext2_pkg.nope:C", r"cannot import module 'userext2_pkg.nope'"),
    ("userext2_pkg.mods:TinyDenoiser", r"is not a subclass of feddm_hpc.federation.callbacks.RoundCallback"),
    ("userext2_pkg.mods:DoesNothing", r"overrides neither after_round nor at_end"),
    ("userext2_pkg.mods:NeedsArgument", r"building .* \(with no arguments\) failed: TypeError"),
])
def test_bad_user_callbacks_name_the_field(user_pkg, name, message):
    with pytest.raises(ConfigError, match=rf"^logging.callbacks: .*{message}"):
        user_callbacks([name])


# ---------------------------------------------------------------- the command line

@pytest.mark.parametrize("field, value, message", [
    ("data.dataset", "userext2_pkg.mods:one_argument", "does not take the arguments (path, split)"),
    ("model.name", "userext2_pkg.mods:WrongShape", "returned (2, 1, 27, 28)"),
    ("logging.callbacks", "[userext2_pkg.nope:C]", "cannot import module 'userext2_pkg.nope'"),
])
def test_validate_exits_2_naming_the_field(user_pkg, field, value, message, capsys):
    """`feddm-hpc validate` in this process (cli.main, user_pkg on sys.path as PYTHONPATH would put
    it): one subprocess each cost ~5 s of torch imports."""
    from feddm_hpc.cli import main

    code = main(["validate", str(TINY), "--set", f"{field}={value}"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: ") and message in lines[0], err


def _write_csv(folder, n=96, side=12):
    """n synthetic grey images, a bright square whose corner is the label (4 classes)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 4
    images = rng.integers(0, 60, (n, side, side))
    for i, c in enumerate(labels):
        r, k = divmod(int(c), 2)
        images[i, r * 6:r * 6 + 6, k * 6:k * 6 + 6] += 180
    header = "label," + ",".join(f"pixel{i}" for i in range(side * side))
    lines = [f"{c}," + ",".join(map(str, img.ravel())) for c, img in zip(labels, images)]
    (folder / "train.csv").write_text("\n".join([header, *lines]) + "\n")
    return folder


@pytest.mark.slow
@pytest.mark.mpi
def test_csv_dataset_with_a_user_model_and_callback_resumes_exactly(tmp_path, user_pkg):
    """The examples' loader and callback and the test's own model, at 2 ranks, resumed at 3."""
    data = _write_csv(tmp_path / "csv")
    run = straight_and_resumed(
        tmp_path, f"data.dataset={CSV}", f"data.path={data}", "data.subset=null",
        "model.name=userext2_pkg.mods:TinyDenoiser", "model.options={width: 6}",
        f"logging.callbacks=[{CSV_LOG}]", "sampling.num_samples=4",
        extra_paths=(ROOT, user_pkg))
    assert final_params(run).size == (2 * 6 * 9 + 6) + (6 * 9 + 1)
    rows = (run / "rounds.csv").read_text().splitlines()
    assert rows[0] == "round,train_loss,uplink_bytes,downlink_bytes" and len(rows) == 3
    assert (tmp_path / "split" / "rounds.csv").read_text().splitlines() == rows  # appended on resume


def test_a_user_model_exports_and_samples_bit_identically(tmp_path, user_pkg):
    """feddm-hpc export of a model.name import path: its parameters by name and model.options;
    the export folder samples exactly as the checkpoint."""
    from feddm_hpc.cli.sample import draw_checkpoint_samples
    from feddm_hpc.config import dump_yaml
    from feddm_hpc.params import ParamSpec, flatten
    from feddm_hpc.rundir.checkpoint import CheckpointData, save_checkpoint
    from feddm_hpc.rundir.export import export_checkpoint

    cfg = config_from_tree({"model": {"name": "userext2_pkg.mods:TinyDenoiser", "options": {"width": 4}},
                            "diffusion": {"timesteps": 20}, "sampling": {"steps": 3}})
    torch.manual_seed(0)
    model = build_model(cfg.model, 3, 8)
    spec, params = ParamSpec.from_model(model), flatten(model)
    ckpt = save_checkpoint(tmp_path / "round-000000.h5", CheckpointData(
        round=0, config_yaml=dump_yaml(cfg), params=params, ema=params * np.float32(0.5),
        spec_text=spec.as_text(), param_fingerprint=spec.fingerprint(), image_shape=(3, 8, 8)))
    info = export_checkpoint(ckpt, tmp_path / "export")
    assert info["model"] == {"name": "userext2_pkg.mods:TinyDenoiser", "image_channels": 3,
                             "image_size": 8, "options": {"width": 4}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert torch.equal(draw_checkpoint_samples(ckpt, 2, device="cpu")[0],
                           draw_checkpoint_samples(tmp_path / "export", 2, device="cpu")[0])
    finally:
        torch.set_num_threads(threads)
