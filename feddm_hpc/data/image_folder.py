"""`data.dataset: image_folder`: JPEG or PNG files in the one-folder-per-class layout.

    data.path/<class>/**/*.jpg              the training split only, or
    data.path/train/<class>/**/*.jpg        with data.path/test/<class>/... as the test split
    data.path/*.png                          no class folders: unlabelled images (CelebA exports)

Labels are the class folders' indices in sorted name order (the same in both splits). Files are
taken in (class, relative path) order; other files (README, hidden files) are ignored. Each image
is converted to RGB (`data.channels: 3`) or greyscale (`1`; Pillow's L conversion); left unset,
the data is greyscale when every file is, else RGB. `data.center_crop` crops the largest centred
square, then `data.image_size` resizes to that side (Pillow bicubic, antialiased). Without
image_size every image must have the same size.

Decoding needs Pillow (`pip install 'feddm_hpc[images]'`). The decoded arrays are cached
(data/cache.py), so only the first load of a folder, per option set and data.subset, decodes files.
"""
from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

import numpy as np

from feddm_hpc.data.cache import cache_key, cached_decode
from feddm_hpc.errors import ConfigError, DataError

EXTENSIONS = (".jpg", ".jpeg", ".png")
PILLOW_HINT = "install it with: pip install pillow (or pip install 'feddm_hpc[images]')"
LAYOUT = ("expected one folder per class (PATH/<class>/*.jpg, or PATH/train/<class>/... and "
          "PATH/test/<class>/...) or images directly in PATH")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError(f"data.dataset: image_folder needs Pillow to decode images; "
                          f"{PILLOW_HINT}") from None
    return Image


def _is_image(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def _images_under(folder: str) -> List[str]:
    """Image files under `folder` (recursively), as sorted paths relative to it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, folder)
        prefix = "" if rel == "." else rel + os.sep  # plain concatenation: 50,000 joins add up
        out.extend(prefix + f for f in sorted(filenames) if _is_image(f))
    return out


def _class_dirs(folder: str) -> List[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def split_folder(path: Optional[str], split: str) -> str:
    if not path:
        raise ConfigError("data.path: dataset 'image_folder' needs data.path set to the image folder")
    if not os.path.isdir(path):
        raise DataError(f"{path}: image folder not found; {LAYOUT}")
    if os.path.isdir(os.path.join(path, "train")) or os.path.isdir(os.path.join(path, "test")):
        folder = os.path.join(path, split)
        if not os.path.isdir(folder):
            raise DataError(f"{folder}: folder not found (no {split} split in {path})")
        return folder
    if split != "train":
        raise DataError(f"{path}: no {split} split (it would be {os.path.join(path, split)}/)")
    return path


def list_images(path: Optional[str], split: str) -> Tuple[str, List[str], Optional[np.ndarray], list]:
    """(split folder, relative image paths, labels or None, class names) in dataset order."""
    folder = split_folder(path, split)
    classes = _class_dirs(folder)
    if not classes:  # flat: unlabelled images
        files = _images_under(folder)
        if not files:
            raise DataError(f"{folder}: no JPEG or PNG images found; {LAYOUT}")
        return folder, files, None, []
    if split != "train" and folder != path:  # labels must mean the same classes in both splits
        train = os.path.join(path, "train")
        if os.path.isdir(train) and _class_dirs(train) != classes:
            raise DataError(f"{folder}: class folders {classes} differ from those of {train} "
                            f"{_class_dirs(train)}; the labels would not match")
    files, labels = [], []
    for k, c in enumerate(classes):
        found = _images_under(os.path.join(folder, c))
        if not found:
            raise DataError(f"{os.path.join(folder, c)}: class folder holds no JPEG or PNG images")
        files.extend(c + os.sep + f for f in found)
        labels.extend([k] * len(found))
    return folder, files, np.asarray(labels, dtype=np.int64), classes


def _decode_one(Image, path: str, mode: str, center_crop: bool, size: Optional[int]):
    try:
        with Image.open(path) as im:
            grey = im.mode in _GREY_MODES
            im = im.convert(mode)  # loads the pixels: truncated or corrupt files fail here
    except Exception as exc:  # UnidentifiedImageError, OSError (truncated), SyntaxError, ...
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
    w, h = im.size
    if center_crop and w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
        w = h = s
    if size is not None and (w, h) != (size, size):
        if w != h:
            raise DataError(f"{path}: {w}x{h} is not square; set data.center_crop=true to crop "
                            f"it before resizing to data.image_size={size}")
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(im), grey


def decode_images(folder: str, files: List[str], channels: Optional[int], center_crop: bool,
                  size: Optional[int]) -> np.ndarray:
    """uint8 [N,H,W,C] of the files (relative to folder)."""
    Image = _pil()
    mode = "L" if channels == 1 else "RGB"
    out, all_grey, first = None, True, None
    for i, rel in enumerate(files):
        path = os.path.join(folder, rel)
        arr, grey = _decode_one(Image, path, mode, center_crop, size)
        all_grey &= grey
        if out is None:
            first = path
            out = np.empty((len(files),) + arr.shape, np.uint8)
        elif arr.shape != out.shape[1:]:
            raise DataError(f"{path}: {arr.shape[1]}x{arr.shape[0]} differs from "
                            f"{out.shape[2]}x{out.shape[1]} ({first}); set data.image_size to "
                            f"resize every image to one size")
        out[i] = arr
    if out.ndim == 3:
        out = out[..., None]
    if channels is None and all_grey:  # every file is greyscale: keep one of the equal channels
        out = np.ascontiguousarray(out[..., :1])
    return out


def load_image_folder(path: Optional[str], split: str, *, select: Callable = None,
                      image_size: Optional[int] = None, channels: Optional[int] = None,
                      center_crop: bool = False, cache: bool = True):
    """The loader of data.dataset=image_folder. `select(n)`: the indices of the files to keep
    (data.subset), applied before decoding so a subset decodes only its own files."""
    folder, files, labels, classes = list_images(path, split)
    if select is not None:
        keep = select(len(files))
        files = [files[i] for i in keep]
        labels = labels[keep] if labels is not None else None
    options = {"image_size": image_size, "channels": channels, "center_crop": bool(center_crop),
               "split": split, "labels": classes}

    def decode():
        return decode_images(folder, files, channels, center_crop, image_size), labels, classes

    if cache:
        stats = []
        for rel in files:
            st = os.stat(folder + os.sep + rel)
            stats.append((rel, st.st_size, st.st_mtime_ns))
        name = os.path.basename(os.path.normpath(os.path.abspath(path))) or "images"
        (images, _, _), _ = cached_decode(f"{name}-{split}-{len(files)}",
                                          cache_key(folder, options, stats), decode)
    else:
        images, _, _ = decode()
    return images, labels, (len(classes) if labels is not None else None)
