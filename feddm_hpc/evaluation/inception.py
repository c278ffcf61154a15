"""Inception-v3 pool3 features (2048-d) for the standard FID, from a user-supplied weights file.

torchvision is not installed and no weights can be downloaded here, so this module defines the
network itself with torchvision's module names; it loads either
  - pytorch-fid's `pt_inception-2015-12-05-*.pth` (the TF FID graph ported to PyTorch; its `fc`
    has 1008 outputs): the standard FID. Its blocks differ from torchvision's in two ways that we
    reproduce: average pools exclude the zero padding (TF semantics), and the last block
    (Mixed_7c) pools with max instead of average.
  - torchvision's `inception_v3_google-*.pth` (`fc` with 1000 outputs): ImageNet weights; FIDs in
    this space are *not* comparable with published FIDs (pytorch-fid warns the same).
Input handling follows pytorch-fid: images in [0, 1] are resized to 299x299 (bilinear,
align_corners=False), scaled to [-1, 1]; grayscale is repeated to three channels.

Only the layers up to the final average pool are built; `fc` and `AuxLogits` in the file are
ignored. The architecture was checked against the reference parameter count (21,785,568 for
these layers) but not against real weights, which this machine does not have.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from feddm_hpc.errors import UserError

FEATURE_DIM = 2048
_BATCH = 50


class Conv(nn.Module):
    """conv (no bias) - batch norm (eps 1e-3) - relu; torchvision's BasicConv2d."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _pool(x, tf_avg: bool, use_max: bool = False):
    if use_max:
        return F.max_pool2d(x, 3, stride=1, padding=1)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=not tf_avg)


class BlockA(nn.Module):
    def __init__(self, cin, pool_features, tf_avg):
        super().__init__()
        self.tf_avg = tf_avg
        self.branch1x1 = Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = Conv(cin, 48, 1), Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, padding=1)
        self.branch_pool = Conv(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_pool(x, self.tf_avg)),
        ], 1)


class BlockB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2 = Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class BlockC(nn.Module):
    def __init__(self, cin, c7, tf_avg):
        super().__init__()
        self.tf_avg = tf_avg
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = Conv(cin, 192, 1)
        self.branch7x7_1 = Conv(cin, c7, 1)
        self.branch7x7_2 = Conv(c7, c7, **row)
        self.branch7x7_3 = Conv(c7, 192, **col)
        self.branch7x7dbl_1 = Conv(cin, c7, 1)
        self.branch7x7dbl_2 = Conv(c7, c7, **col)
        self.branch7x7dbl_3 = Conv(c7, c7, **row)
        self.branch7x7dbl_4 = Conv(c7, c7, **col)
        self.branch7x7dbl_5 = Conv(c7, 192, **row)
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_pool(x, self.tf_avg))], 1)


class BlockD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = Conv(cin, 192, 1), Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = Conv(cin, 192, 1)
        self.branch7x7x3_2 = Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7,
                          F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    def __init__(self, cin, tf_avg, use_max):
        super().__init__()
        self.tf_avg, self.use_max = tf_avg, use_max
        self.branch1x1 = Conv(cin, 320, 1)
        self.branch3x3_1 = Conv(cin, 384, 1)
        self.branch3x3_2a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = Conv(cin, 448, 1)
        self.branch3x3dbl_2 = Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = Conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = Conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
            self.branch_pool(_pool(x, self.tf_avg, self.use_max)),
        ], 1)


class InceptionV3Features(nn.Module):
    """Inception-v3 up to the 2048-d global average pool. `fid=True`: pytorch-fid's TF variant."""

    def __init__(self, fid: bool = True):
        super().__init__()
        self.Conv2d_1a_3x3 = Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = Conv(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32, fid)
        self.Mixed_5c = BlockA(256, 64, fid)
        self.Mixed_5d = BlockA(288, 64, fid)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128, fid)
        self.Mixed_6c = BlockC(768, 160, fid)
        self.Mixed_6d = BlockC(768, 160, fid)
        self.Mixed_6e = BlockC(768, 192, fid)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, fid, use_max=False)
        self.Mixed_7c = BlockE(2048, fid, use_max=fid)

    def forward(self, x):
        """x: float [N, 3, 299, 299] in [-1, 1] -> [N, 2048]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
                     "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class InceptionExtractor:
    """Loaded weights in eval mode; `.features(images)` -> float64 [N, 2048] in host memory.

    `device` (default cpu, where every FID in this repository was computed) is where the
    network runs; images move there batch by batch, resized there."""

    def __init__(self, model: InceptionV3Features, variant: str, path: Path, device: str = "cpu"):
        self.variant, self.path, self.device = variant, path, str(device)
        self.model = model.eval().to(self.device)

    @torch.no_grad()
    def features(self, images) -> np.ndarray:
        from feddm_hpc.evaluation.features import _to_nchw_float

        x = _to_nchw_float(images)
        out = []
        for s in range(0, x.shape[0], _BATCH):
            b = (x[s:s + _BATCH].to(self.device) + 1.0) / 2.0   # [0, 1], as pytorch-fid reads PNGs
            if b.shape[1] == 1:
                b = b.repeat(1, 3, 1, 1)
            elif b.shape[1] != 3:
                raise ValueError(f"Inception needs 1 or 3 channels, got {b.shape[1]}")
            b = F.interpolate(b, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.model(2.0 * b - 1.0).cpu().double().numpy())  # float64: exact either way
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


def load_inception(path, device: str = "cpu") -> InceptionExtractor:
    """Read a pytorch-fid or torchvision Inception-v3 state dict; a bad file is a UserError.
    `device`: where the network runs (InceptionExtractor)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--inception-weights: {path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or holding pickled objects
        raise UserError(f"--inception-weights: {path}: not a readable torch state dict "
                        f"({str(exc).splitlines()[0][:120]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"--inception-weights: {path}: expected a state dict")
    fc = state.get("fc.weight")
    fid = fc is None or tuple(fc.shape) == (1008, 2048)
    model = InceptionV3Features(fid=fid)
    wanted = model.state_dict()
    missing = [k for k in wanted if k not in state]
    bad = [k for k in wanted if k in state and tuple(state[k].shape) != tuple(wanted[k].shape)]
    if missing or bad:
        raise UserError(f"--inception-weights: {path}: not an Inception-v3 state dict "
                        f"({len(missing)} missing, {len(bad)} mis-shaped tensors, e.g. "
                        f"{(missing + bad)[0]})")
    model.load_state_dict({k: state[k] for k in wanted})
    return InceptionExtractor(model, "pytorch-fid" if fid else "torchvision", path, device)
