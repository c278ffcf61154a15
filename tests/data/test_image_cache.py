"""The decoded-array cache of image folders (data/cache.py): hits, misses on any change, one
decoder among concurrent loaders, atomic entries, and decoding without a usable cache folder."""
import os
import threading
import time

import numpy as np
import pytest

from feddm_hpc.data import image_folder, load_dataset
from feddm_hpc.data.cache import cache_root, cached_decode

Image = pytest.importorskip("PIL.Image")


def make_folder(root, n=4):
    for i in range(n):
        (root / "a").mkdir(parents=True, exist_ok=True)
        arr = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "a" / f"{i}.png")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDDM_HPC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "image_folder"


def count_decodes(monkeypatch):
    calls = []
    real = image_folder.decode_images

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(image_folder, "decode_images", counting)
    return calls


def test_second_load_reads_the_cache_and_any_change_misses(tmp_path, cache, monkeypatch):
    make_folder(tmp_path / "imgs")
    calls = count_decodes(monkeypatch)
    first = load_dataset("image_folder", str(tmp_path / "imgs"))
    assert cache_root() == cache and len(list(cache.glob("imgs-train-4-*.npz"))) == 1
    second = load_dataset("image_folder", str(tmp_path / "imgs"))
    assert len(calls) == 1 and second.checksum == first.checksum
    load_dataset("image_folder", str(tmp_path / "imgs"), channels=1)  # another option: a new entry
    assert len(calls) == 2
    target = tmp_path / "imgs" / "a" / "0.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(target)
    os.utime(target, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    third = load_dataset("image_folder", str(tmp_path / "imgs"))
    assert len(calls) == 3 and third.checksum != first.checksum
    assert not third.images[0].any()


def test_concurrent_loaders_decode_once(tmp_path):
    decodes = []

    def decode():
        decodes.append(1)
        time.sleep(0.3)
        return np.ones((2, 4, 4, 3), np.uint8), np.array([0, 1]), ["a", "b"]

    results = []
    threads = [threading.Thread(target=lambda: results.append(cached_decode("x", "ab" * 32, decode, tmp_path)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(decodes) == 1 and sorted(hit for _, hit in results) == [False, True, True]
    assert all(np.array_equal(r[0][0], results[0][0][0]) for r in results)
    assert [p.name for p in tmp_path.glob("*.tmp")] == []


def test_an_unreadable_entry_is_decoded_again(tmp_path):
    (tmp_path / f"x-{'cd' * 8}.npz").write_bytes(b"not a zip")
    arrays, hit = cached_decode("x", "cd" * 32, lambda: (np.zeros((1, 2, 2, 1), np.uint8), None, []), tmp_path)
    assert not hit and arrays[1] is None
    again, hit = cached_decode("x", "cd" * 32, lambda: pytest.fail("decoded twice"), tmp_path)
    assert hit and again[0].shape == (1, 2, 2, 1) and again[1] is None


def test_an_unusable_cache_folder_still_loads(tmp_path, monkeypatch, capsys):
    make_folder(tmp_path / "imgs")
    (tmp_path / "file").write_text("a file where the cache folder would be")
    monkeypatch.setenv("FEDDM_HPC_CACHE", str(tmp_path / "file"))
    ds = load_dataset("image_folder", str(tmp_path / "imgs"))
    assert len(ds) == 4 and "decoding without it" in capsys.readouterr().err
