"""The ImageNet normalisation every view of the project uses (DINO's `Normalize` constants), defined once."""

from __future__ import annotations

import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over the channel dimension of [..., 3, H, W] images in [0, 1]."""
    return (x - torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]) / torch.tensor(
        IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `normalize`: normalised [..., 3, H, W] images back to [0, 1] (not clamped)."""
    return x * torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None] + torch.tensor(
        IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
