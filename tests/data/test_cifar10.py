"""data.dataset=cifar10: the official binary batches (1 label byte + 3072 pixel bytes a record, red
then green then blue planes), read with numpy; tested on small files written in that format."""
import numpy as np
import pytest

from feddm_hpc.data import load_dataset
from feddm_hpc.data.cifar10 import FILES, RECORD, read_batch, write_batch
from feddm_hpc.errors import ConfigError, DataError


def fake_batches(folder, per_file=3):
    """Writes every batch file; returns {file name: (images, labels)}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, name in enumerate(FILES["train"] + FILES["test"]):
        rng = np.random.default_rng(k)
        images = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, per_file)
        write_batch(str(folder / name), images, labels)
        out[name] = (images, labels)
    return out


def test_the_record_layout_is_label_then_red_green_blue_planes(tmp_path):
    record = np.zeros(RECORD, np.uint8)
    record[0] = 7
    record[1 + 0 * 1024 + 5 * 32 + 9] = 200   # red at row 5, column 9
    record[1 + 2 * 1024 + 31 * 32 + 0] = 99   # blue at row 31, column 0
    record.tofile(tmp_path / "one.bin")
    images, labels = read_batch(str(tmp_path / "one.bin"))
    assert labels.tolist() == [7] and images.shape == (1, 32, 32, 3)
    assert images[0, 5, 9].tolist() == [200, 0, 0] and images[0, 31, 0].tolist() == [0, 0, 99]
    assert int(images.sum()) == 299


def test_splits_concatenate_their_batches_in_order(tmp_path):
    want = fake_batches(tmp_path / "cifar-10-batches-bin")
    for path in (tmp_path, tmp_path / "cifar-10-batches-bin"):  # the archive folder or its parent
        train = load_dataset("cifar10", str(path), "train")
        assert train.images.shape == (15, 32, 32, 3) and train.num_classes == 10
        np.testing.assert_array_equal(train.images, np.concatenate([want[f][0] for f in FILES["train"]]))
        np.testing.assert_array_equal(train.labels, np.concatenate([want[f][1] for f in FILES["train"]]))
    test = load_dataset("cifar10", str(tmp_path), "test", subset=2, seed=1)
    assert test.images.shape == (2, 32, 32, 3)


def test_missing_truncated_or_foreign_files_name_the_file(tmp_path):
    fake_batches(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3.bin").unlink()
    (tmp_path / "c" / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match=r"c/data_batch_3\.bin: file not found \(nor 1 other"):
        load_dataset("cifar10", str(tmp_path / "c"), "train")
    assert len(load_dataset("cifar10", str(tmp_path / "c"), "test")) == 3
    (tmp_path / "c" / "test_batch.bin").write_bytes(b"\0" * (RECORD + 5))
    with pytest.raises(DataError, match=r"test_batch\.bin: 3078 bytes is not a whole number"):
        load_dataset("cifar10", str(tmp_path / "c"), "test")
    (tmp_path / "c" / "test_batch.bin").write_bytes(b"\x0c" * RECORD)
    with pytest.raises(DataError, match=r"test_batch\.bin: label byte 12 outside 0\.\.9"):
        load_dataset("cifar10", str(tmp_path / "c"), "test")
    with pytest.raises(DataError, match="folder not found; download cifar-10-binary"):
        load_dataset("cifar10", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="^data.path: dataset 'cifar10' needs data.path"):
        load_dataset("cifar10", None)
