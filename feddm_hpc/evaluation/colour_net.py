"""The feature extractor for colour images (features.py picks it for 3-channel data).

Why not the LeNet: trained on CIFAR-10 the way it is trained on MNIST it reached 66.1% test
accuracy, and a feature space that misreads a third of the real images cannot tell good colour
samples from bad ones. This is a VGG-style network small enough to train once on 2 CPU cores:
three stages of two 3x3 convolutions with batch norm (32, 64, 128 channels; 32 -> 16 -> 8 -> 4
by max pooling), global average pooling, then the same 128-d post-ReLU feature layer and class
layer as the LeNet, so FD/KID/PRDC see 128 features either way. It works at any image size
(the pooling is global), e.g. 64x64 CelebA.

Training: SGD with Nesterov momentum 0.9, weight decay 5e-4 (not on batch norm or biases),
batch 128, the learning rate rising linearly to `lr` over the first 20% of steps and falling
linearly to 0 (one cycle), each batch randomly flipped left-right and shifted by up to 4 pixels
(reflect padding then a random crop): the standard CIFAR recipe, which this small a network
needs to generalise. Every random draw comes from one generator seeded by the settings' seed,
and features.py trains on one thread with deterministic algorithms: the same weights every time.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

ARCH = "colournet6"
ARCH_VERSION = 1
WIDTHS = (32, 64, 128)
FEATURE_DIM = 128
TRAINING_DEFAULTS = dict(epochs=8, batch_size=128, lr=0.1)
WEIGHT_DECAY = 5e-4
WARMUP = 0.2            # share of the steps over which the learning rate rises
SHIFT = 4               # pixels of random translation


def _stage(c_in: int, c_out: int) -> list:
    layers = []
    for c in (c_in, c_out):
        layers += [nn.Conv2d(c, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return layers + [nn.MaxPool2d(2)]


class ColourNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        a, b, c = WIDTHS
        self.conv = nn.Sequential(*_stage(in_channels, a), *_stage(a, b), *_stage(b, c),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc1 = nn.Linear(c, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc1(self.conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2 and shifted by up to SHIFT pixels."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    padded = nn.functional.pad(x, (SHIFT,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * SHIFT + 1, (2, n), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def lr_at(step: int, total: int, peak: float) -> float:
    rise = max(1, int(WARMUP * total))
    if step < rise:
        return peak * (step + 1) / rise
    return peak * max(0.0, (total - step) / max(1, total - rise))


def train(settings: dict, images, labels, to_float) -> ColourNet:
    """The trained network in eval mode. `to_float`: uint8 NHWC -> float NCHW in [-1, 1]."""
    torch.manual_seed(settings["seed"])
    gen = torch.Generator().manual_seed(settings["seed"])
    model = ColourNet(settings["in_channels"], settings["num_classes"])
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": WEIGHT_DECAY},
                           {"params": rest, "weight_decay": 0.0}],
                          lr=settings["lr"], momentum=0.9, nesterov=True)
    labels = torch.from_numpy(np.array(labels, dtype=np.int64))
    n, bs = labels.shape[0], settings["batch_size"]
    per_epoch = -(-n // bs)
    total = settings["epochs"] * per_epoch
    model.train()
    step = 0
    for _ in range(settings["epochs"]):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, bs):
            idx = perm[s:s + bs].numpy()
            x = augment(to_float(images[idx]), gen)
            loss = nn.functional.cross_entropy(model(x), labels[idx])
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, settings["lr"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return model.eval()
