"""A user's dataset loader: images stored as CSV rows of pixels, the layout of Kaggle's
"Digit Recognizer" MNIST files and of many exports from spreadsheets and other frameworks:

    label,pixel0,pixel1,...,pixel783        (a header line; the label column is optional)
    5,0,0,...,0                             (one image a row, values 0-255, row-major)

`data.path` is a folder holding train.csv (and optionally test.csv). The side of the square
images is the square root of the number of pixel columns; grey images only (one channel).

Use it without editing feddm_hpc: put the folder holding `examples/` (here the repository root)
on PYTHONPATH on every rank, and name the function by import path:

    PYTHONPATH=$PWD mpiexec -n 2 python -m mpi4py -m feddm_hpc train configs/tiny.yaml \\
        --set data.dataset=examples.pixel_csv_dataset:load_pixel_csv \\
        --set data.path=/path/to/csv_folder --set data.subset=null

The protocol (feddm_hpc.extend.DatasetLoader): a function `loader(path, split)` returning
(images [N,H,W] or [N,H,W,C] uint8, labels [N] ints or None, num_classes or None). feddm_hpc
calls it on every rank, so it must return the same arrays every time (reading a file does);
everything after it (data.subset, data.partition, batches, evaluation) is the simulator's own.
A missing file is a DataError (exit 2 with its message); any other exception raised here is
reported as one naming data.dataset.
"""
import math
import os

import numpy as np

from feddm_hpc.extend import DataError

HINT = "write train.csv (and test.csv) with a header line and one image a row of 0-255 pixels"


def load_pixel_csv(path, split):
    if path is None:
        raise DataError("data.path: set it to the folder holding train.csv (and test.csv)")
    file = os.path.join(path, f"{split}.csv")
    if not os.path.isfile(file):
        raise DataError(f"{file}: file not found; {HINT}")
    with open(file) as f:
        header = f.readline().strip().split(",")
    try:
        table = np.loadtxt(file, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{file}: not a table of integers ({exc}); {HINT}") from None
    has_labels = header[0] == "label"
    pixels = table[:, 1:] if has_labels else table
    side = math.isqrt(pixels.shape[1])
    if side * side != pixels.shape[1] or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{file}: {pixels.shape[1]} pixel columns of 0-255 expected to make a "
                        f"square image; {HINT}")
    images = pixels.astype(np.uint8).reshape(-1, side, side)
    labels = table[:, 0] if has_labels else None
    return images, labels, None
