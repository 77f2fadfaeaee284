"""LOST (Siméoni et al., 2021): one object box per image from the last block's patch keys.

A = K Kᵀ over patches. The seed is the patch with the fewest positive correlations (the diagonal
excluded): objects cover less of the image than background. Expansion: among the k patches of lowest
degree, those positively correlated with the seed; their summed rows of A give a score per patch. The
box encloses the 4-connected component of positive scores that contains the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass
class LostResult:
    box: np.ndarray  # [4] x1, y1, x2, y2 in image pixels
    seed: int  # patch index (row-major on the grid)
    degree: torch.Tensor  # [n] positive correlations per patch
    mask: np.ndarray  # [h, w] bool: the seed's component


def degrees(a: torch.Tensor) -> torch.Tensor:
    """Number of positive entries per row of A, the diagonal excluded."""
    a = a.clone()
    a.fill_diagonal_(0)
    return (a > 0).sum(dim=1)


def seed_component(score: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of `score > 0` [h, w] that contains `seed` (row, col)."""
    _, labels = cv2.connectedComponents((score > 0).astype(np.uint8), connectivity=4)
    cc = labels[seed]
    if cc == 0:
        raise ValueError("the LOST seed is not in a positive component")  # A[seed, seed] > 0 always
    return labels == cc


def lost(keys: torch.Tensor, grid: tuple[int, int], patch: int, image_size: tuple[int, int],
         k_patches: int = 100) -> LostResult:
    """LOST on keys [n, d] of a (h, w) patch grid; the box is scaled by `patch` and clipped to
    `image_size` (height, width) (the input is padded to a multiple of the patch)."""
    a = keys.float() @ keys.float().T
    deg = degrees(a)
    order = torch.argsort(deg, stable=True)  # fewest positive correlations first; ties by index
    seed = int(order[0])
    potentials = order[:k_patches]
    similar = potentials[a[seed, potentials] > 0]
    score = a[similar].sum(dim=0).reshape(grid).cpu().numpy()
    mask = seed_component(score, divmod(seed, grid[1]))
    rows, cols = np.nonzero(mask)
    x1, y1 = cols.min() * patch, rows.min() * patch
    x2 = min((cols.max() + 1) * patch, image_size[1])
    y2 = min((rows.max() + 1) * patch, image_size[0])
    return LostResult(np.array([x1, y1, x2, y2], dtype=np.float64), seed, deg, mask)
