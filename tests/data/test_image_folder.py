"""data.dataset=image_folder: layout, labels, decoding options, subsets, bad input (exit 2, one line
naming the file or field), and the same loader on a small subset of the shared CIFAR-10 JPEGs."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from feddm_hpc.config import config_from_tree
from feddm_hpc.data import load_configured, load_dataset
from feddm_hpc.data.cifar10 import CLASSES
from feddm_hpc.errors import ConfigError, DataError

from conftest import cli_in_process

Image = pytest.importorskip("PIL.Image")
CIFAR_JPEG = Path(os.environ.get("FEDDM_HPC_CIFAR10_JPEG", Path(__file__).resolve().parents[3]
                                 / "shared" / "data" / "cifar10-jpeg"))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDDM_HPC_CACHE", str(tmp_path / "cache"))


def pixels(seed, size=(8, 8), channels=3):
    shape = (size[1], size[0]) + ((channels,) if channels > 1 else ())
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write(path: Path, array: np.ndarray, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def make_folder(root: Path, classes=("dog", "cat"), per_class=3, size=(8, 8), channels=3):
    """PNG files (lossless): returns {relative path: pixels}."""
    out = {}
    for c in classes:
        for i in range(per_class):
            rel = f"{c}/{i:02d}.png"
            out[rel] = pixels(len(out) + 100 * len(c), size, channels)
            write(root / rel, out[rel])
    return out


def test_labels_follow_sorted_folder_names_and_pngs_are_exact(tmp_path):
    files = make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "README.md").write_text("ignored")
    (tmp_path / "imgs" / "cat" / ".hidden.png").write_bytes(b"ignored")
    ds = load_dataset("image_folder", str(tmp_path / "imgs"))
    assert ds.images.shape == (6, 8, 8, 3) and ds.num_classes == 2
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]  # cat < dog
    want = [files[f"{c}/{i:02d}.png"] for c in ("cat", "dog") for i in range(3)]
    np.testing.assert_array_equal(ds.images, np.stack(want))


def test_greyscale_is_detected_and_channels_convert(tmp_path):
    make_folder(tmp_path / "grey", channels=1)
    grey = load_dataset("image_folder", str(tmp_path / "grey"))
    assert grey.image_shape == (8, 8, 1)
    rgb = load_dataset("image_folder", str(tmp_path / "grey"), channels=3)
    assert rgb.image_shape == (8, 8, 3)
    np.testing.assert_array_equal(rgb.images[..., 1], grey.images[..., 0])
    files = make_folder(tmp_path / "rgb")
    as_grey = load_dataset("image_folder", str(tmp_path / "rgb"), channels=1)
    first = np.asarray(Image.fromarray(files["cat/00.png"]).convert("L"))
    np.testing.assert_array_equal(as_grey.images[0, ..., 0], first)


def test_center_crop_then_resize(tmp_path):
    src = pixels(3, size=(12, 8))  # 12 wide, 8 high
    write(tmp_path / "imgs" / "a" / "x.png", src)
    ds = load_dataset("image_folder", str(tmp_path / "imgs"), image_size=4, center_crop=True)
    want = Image.fromarray(src).crop((2, 0, 10, 8)).resize((4, 4), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(ds.images[0], np.asarray(want))
    with pytest.raises(DataError, match=r"x\.png: 12x8 is not square; set data\.center_crop=true"):
        load_dataset("image_folder", str(tmp_path / "imgs"), image_size=4)


def test_train_and_test_splits_and_a_flat_unlabelled_folder(tmp_path):
    make_folder(tmp_path / "d" / "train")
    make_folder(tmp_path / "d" / "test", per_class=1)
    assert len(load_dataset("image_folder", str(tmp_path / "d"), "train")) == 6
    test = load_dataset("image_folder", str(tmp_path / "d"), "test")
    assert test.labels.tolist() == [0, 1]
    make_folder(tmp_path / "e" / "train")
    with pytest.raises(DataError, match=r"e/test: folder not found"):
        load_dataset("image_folder", str(tmp_path / "e"), "test")
    make_folder(tmp_path / "f" / "train")
    make_folder(tmp_path / "f" / "test", classes=("cat", "cow"), per_class=1)
    with pytest.raises(DataError, match="differ from those of"):
        load_dataset("image_folder", str(tmp_path / "f"), "test")
    for i in range(3):
        write(tmp_path / "flat" / f"{i}.jpg", pixels(i), fmt="JPEG")
    flat = load_dataset("image_folder", str(tmp_path / "flat"))
    assert flat.labels is None and flat.num_classes is None and flat.image_shape == (8, 8, 3)


def test_a_subset_decodes_only_its_files_and_equals_the_full_load_subset(tmp_path, monkeypatch):
    make_folder(tmp_path / "imgs", per_class=10)
    full = load_dataset("image_folder", str(tmp_path / "imgs"))
    # A file outside the drawn subset may be corrupt: it is never decoded.
    from feddm_hpc.data.datasets import subset_indices
    keep = set(subset_indices(20, 5, 7, "x").tolist())
    skipped = next(i for i in range(20) if i not in keep)
    (tmp_path / "imgs" / ("cat" if skipped < 10 else "dog") / f"{skipped % 10:02d}.png").write_bytes(b"junk")
    sub = load_dataset("image_folder", str(tmp_path / "imgs"), subset=5, seed=7)
    idx = sorted(keep)
    np.testing.assert_array_equal(sub.images, full.images[idx])
    np.testing.assert_array_equal(sub.labels, full.labels[idx])


def test_bad_folders_name_the_file(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty/cat: class folder holds no JPEG or PNG images"):
        load_dataset("image_folder", str(tmp_path / "empty"))
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match=r"none: no JPEG or PNG images found"):
        load_dataset("image_folder", str(tmp_path / "none"))
    with pytest.raises(DataError, match="image folder not found"):
        load_dataset("image_folder", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="^data.path: dataset 'image_folder' needs data.path"):
        load_dataset("image_folder", None)
    make_folder(tmp_path / "mixed")
    write(tmp_path / "mixed" / "dog" / "big.png", pixels(1, size=(10, 8)))
    with pytest.raises(DataError, match=r"mixed/dog/big\.png: 10x8 differs from 8x8 .*set data\.image_size"):
        load_dataset("image_folder", str(tmp_path / "mixed"))
    assert load_dataset("image_folder", str(tmp_path / "mixed"), image_size=8,
                        center_crop=True).image_shape == (8, 8, 3)


def test_a_truncated_jpeg_is_named(tmp_path):
    make_folder(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "dog" / "broken.jpg"
    write(bad, pixels(5, size=(32, 32)), fmt="JPEG")
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=r"broken\.jpg: cannot decode image"):
        load_dataset("image_folder", str(tmp_path / "imgs"))


def test_without_pillow_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    make_folder(tmp_path / "imgs")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ConfigError, match=r"needs Pillow.*pip install pillow"):
        load_dataset("image_folder", str(tmp_path / "imgs"))


def test_config_fields_and_their_checks(tmp_path):
    make_folder(tmp_path / "imgs", size=(12, 12))
    c = config_from_tree({"data": {"dataset": "image_folder", "path": str(tmp_path / "imgs"),
                                   "image_size": 4, "channels": 1}})
    assert load_configured(c.data).image_shape == (4, 4, 1)
    for data, message in [({"dataset": "image_folder"}, "data.path: required"),
                          ({"dataset": "cifar10"}, "data.path: required"),
                          ({"image_size": 16}, "data.image_size/center_crop/channels: only for"),
                          ({"dataset": "image_folder", "path": "x", "channels": 2}, "data.channels"),
                          ({"dataset": "image_folder", "path": "x", "image_size": 2}, "data.image_size")]:
        with pytest.raises(ConfigError, match=message):
            config_from_tree({"data": data})
    with pytest.raises(ConfigError, match="data.image_size: only for data.dataset=image_folder"):
        load_dataset("mnist", None, image_size=16)


@pytest.mark.slow  # two CLI validations that decode a folder
def test_cli_exits_2_with_one_line_naming_the_file(tmp_path):
    make_folder(tmp_path / "imgs")
    bad = tmp_path / "imgs" / "cat" / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for data_path, named in [(tmp_path / "imgs", "corrupt.jpg"), (tmp_path / "nothing", "nothing")]:
        out = cli_in_process(["validate", "configs/tiny.yaml", "--set", "data.dataset=image_folder",
                       "--set", f"data.path={data_path}", "--set", "data.subset=null"],
                      env_extra={"FEDDM_HPC_CACHE": str(tmp_path / "cache")})
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr
        assert named in lines[0]


@pytest.mark.skipif(not CIFAR_JPEG.is_dir(), reason=f"{CIFAR_JPEG} not present")
def test_the_shared_cifar10_jpegs_load_as_ten_classes_in_cifar_order():
    assert [p.name for p in sorted((CIFAR_JPEG / "test").iterdir())] == list(CLASSES)
    ds = load_dataset("image_folder", str(CIFAR_JPEG), "test", subset=200, seed=0)
    assert ds.images.shape == (200, 32, 32, 3) and ds.num_classes == 10
    assert set(ds.labels.tolist()) == set(range(10))
    again = load_dataset("image_folder", str(CIFAR_JPEG), "test", subset=200, seed=0)  # cached
    assert again.checksum == ds.checksum
