import numpy as np
import pytest
import torch

from feddm_hpc.rundir.imaging import read_png, save_image_grid


def test_grayscale_round_trip_values_and_grid_size(tmp_path):
    images = np.full((5, 1, 4, 3), -1.0, dtype=np.float32)
    images[1] = 1.0
    images[2] = 0.0
    path = tmp_path / "a" / "b" / "grid.png"
    save_image_grid(images, str(path), nrow=3)
    pix = read_png(path)
    # 3 columns, 2 rows, 2-pixel padding around and between tiles
    assert pix.shape == (2 * (4 + 2) + 2, 3 * (3 + 2) + 2)
    assert pix.dtype == np.uint8
    assert (pix[2:6, 2:5] == 0).all()            # image 0: -1 -> 0
    assert (pix[2:6, 7:10] == 255).all()         # image 1: 1 -> 255
    assert (pix[2:6, 12:15] == 128).all()        # image 2: 0 -> 127.5 rounds to 128
    assert pix[0].max() == 0 and pix[:, 0].max() == 0  # black padding
    assert not (tmp_path / "a" / "b" / "grid.png.tmp").exists()


def test_rgb_torch_tensor_round_trip_default_nrow(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(4, 3, 5, 6) * 2 - 1
    path = tmp_path / "rgb.png"
    save_image_grid(images, path)
    pix = read_png(path)
    assert pix.shape == (2 * 7 + 2, 2 * 8 + 2, 3)  # ceil(sqrt(4)) = 2 per row
    expected = np.rint((images[3].numpy().astype(np.float64) + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(pix[9:14, 10:16], expected.transpose(1, 2, 0))


def test_out_of_range_and_nan_are_clipped(tmp_path):
    images = np.array([[[[-5.0, 5.0, np.nan]]]])
    save_image_grid(images, tmp_path / "c.png")
    assert read_png(tmp_path / "c.png")[2, 2:5].tolist() == [0, 255, 128]


def test_bad_channel_count_raises(tmp_path):
    with pytest.raises(ValueError, match="C in"):
        save_image_grid(np.zeros((1, 2, 4, 4)), tmp_path / "x.png")


def test_corrupt_png_is_rejected(tmp_path):
    path = tmp_path / "d.png"
    save_image_grid(np.zeros((1, 1, 4, 4)), path)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # inside the IDAT chunk
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        read_png(path)


def test_an_independent_decoder_reads_our_png(tmp_path):
    image = pytest.importorskip("PIL.Image")  # Pillow is only a test-time cross-check
    images = np.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    save_image_grid(images, tmp_path / "e.png", nrow=1)
    np.testing.assert_array_equal(np.asarray(image.open(tmp_path / "e.png")),
                                  read_png(tmp_path / "e.png"))
