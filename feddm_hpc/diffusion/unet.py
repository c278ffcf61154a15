"""The DDPM noise-prediction U-Net (Ho et al. 2020), as a plain nn.Module.

Federation moves exactly `named_parameters()`: so there is no BatchNorm and no buffer that carries
state (the sinusoidal time embedding is computed on the fly). GroupNorm and dropout are the only
normalisation and regularisation, and both are stateless between steps.
"""
import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters: the size of the flat vector that travels each round."""
    return sum(p.numel() for p in model.parameters())


def _num_groups(channels: int) -> int:
    # Ho et al. use 32 groups at 128+ channels (4 channels a group). Our models are much thinner, and
    # gcd(32, ch) would give one channel a group (instance norm) at ch <= 32; keep >= 4 channels a
    # group where possible by taking the largest divisor of ch that is <= min(32, ch // 4).
    limit = max(1, min(32, channels // 4))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_num_groups(channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    # Zero-initialise the last layer of each residual branch (Ho et al. init_scale=0): every block
    # starts as the identity, which keeps early training stable without normalisation tricks.
    for p in module.parameters():
        nn.init.zeros_(p)
    module.zero_init = True   # parameterization.factorize zero-initialises the factored form too
    return module


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps [B] -> [B, dim] (Transformer / DDPM style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32)
                      / max(half - 1, 1))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        # A 1x1 conv only where the channel count changes; otherwise the skip is the identity.
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(2, 3).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """eps_theta(x_t, t): [B,C,H,W] float, [B] int64 -> [B,C,H,W]."""

    def __init__(self, image_channels: int, base_channels: int, channel_mults: Sequence[int],
                 num_res_blocks: int, attention_resolutions: Sequence[int], dropout: float,
                 image_size: int):
        super().__init__()
        self.base_channels = base_channels
        temb_ch = 4 * base_channels
        self.temb = nn.Sequential(nn.Linear(base_channels, temb_ch), nn.SiLU(),
                                  nn.Linear(temb_ch, temb_ch))
        self.conv_in = nn.Conv2d(image_channels, base_channels, 3, padding=1)

        attn = set(attention_resolutions)
        res, ch = image_size, base_channels
        skip_chs: List[int] = [ch]
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                out = base_channels * mult
                self.down.append(self._stage(ch, out, temb_ch, dropout, res in attn))
                ch = out
                skip_chs.append(ch)
            if level != len(channel_mults) - 1:
                self.down.append(Downsample(ch))
                res //= 2
                skip_chs.append(ch)

        self.mid1 = ResBlock(ch, ch, temb_ch, dropout)
        self.mid_attn = AttnBlock(ch)
        self.mid2 = ResBlock(ch, ch, temb_ch, dropout)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            # One block more than on the way down: it consumes the skip saved after the
            # Downsample (or after conv_in at level 0).
            for _ in range(num_res_blocks + 1):
                out = base_channels * mult
                self.up.append(self._stage(ch + skip_chs.pop(), out, temb_ch, dropout, res in attn))
                ch = out
            if level != 0:
                self.up.append(Upsample(ch))
                res *= 2
        assert not skip_chs, "every skip connection must be consumed"

        self.norm_out = _norm(ch)
        self.conv_out = _zero(nn.Conv2d(ch, image_channels, 3, padding=1))

    @staticmethod
    def _stage(in_ch, out_ch, temb_ch, dropout, with_attn) -> nn.ModuleList:
        blocks = [ResBlock(in_ch, out_ch, temb_ch, dropout)]
        if with_attn:
            blocks.append(AttnBlock(out_ch))
        return nn.ModuleList(blocks)

    @staticmethod
    def _run_stage(stage: nn.Module, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        if isinstance(stage, nn.ModuleList):
            h = stage[0](h, temb)
            for block in stage[1:]:
                h = block(h)
            return h
        return stage(h)  # Downsample / Upsample

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.temb(timestep_embedding(t, self.base_channels).to(x.dtype))
        h = self.conv_in(x)
        skips = [h]
        for stage in self.down:
            h = self._run_stage(stage, h, temb)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for stage in self.up:
            if isinstance(stage, nn.ModuleList):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run_stage(stage, h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def _resolutions(image_size: int, levels: int) -> List[int]:
    return [image_size // 2 ** i for i in range(levels)]


def build_unet(model_cfg, image_channels: int, image_size: int) -> nn.Module:
    """Build the U-Net from a config with base_channels, channel_mults, num_res_blocks,
    attention_resolutions and dropout. Raises ValueError on a shape the network cannot take."""
    mults = tuple(int(m) for m in model_cfg.channel_mults)
    base = int(model_cfg.base_channels)
    nres = int(model_cfg.num_res_blocks)
    attn = tuple(int(r) for r in model_cfg.attention_resolutions)
    dropout = float(model_cfg.dropout)
    if not mults or any(m < 1 for m in mults):
        raise ValueError(f"model.channel_mults must be a non-empty list of positive ints, got {mults}")
    if base < 1 or nres < 1:
        raise ValueError(f"model.base_channels and model.num_res_blocks must be >= 1, "
                         f"got {base} and {nres}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.dropout must be in [0, 1), got {dropout}")
    if image_channels < 1:
        raise ValueError(f"image_channels must be >= 1, got {image_channels}")
    factor = 2 ** (len(mults) - 1)
    # Every downsample must halve exactly, or the upsampled map would not match its skip.
    if image_size < 1 or image_size % factor:
        raise ValueError(
            f"image size {image_size} is not divisible by 2**(len(model.channel_mults)-1) = {factor}: "
            f"{len(mults)} levels downsample {len(mults) - 1} times; use fewer channel_mults")
    resolutions = _resolutions(image_size, len(mults))
    # An attention resolution that no level has would be silently ignored: say so instead.
    missing = [r for r in attn if r not in resolutions]
    if missing:
        raise ValueError(f"model.attention_resolutions {missing} match no feature-map size; "
                         f"for image size {image_size} the sizes are {resolutions}")
    return UNet(image_channels, base, mults, nres, attn, dropout, image_size)
