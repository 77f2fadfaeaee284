"""The probe's picture: validation images next to their ground truth and the prediction, with a legend.

One row per image: the image | the ground truth | the prediction, label maps coloured with the
PASCAL VOC colour map (class c: colour c + 1; ignored pixels: VOC's light void colour), and a legend
naming the colour of every class shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dora.eval.davis_data import voc_palette
from dora.eval.seg_data import read_image
from dora.eval.seg_metrics import IGNORE
from pipeline.files import save_image_atomic

VOID = (224, 224, 192)


def colours(num_classes: int) -> np.ndarray:
    """[256, 3] uint8: the colour of each label value (class c -> VOC colour c + 1, 255 -> void)."""
    pal = voc_palette(max(257, num_classes + 1))
    table = pal[1:257].copy()
    table[IGNORE] = VOID
    return table


def segment_sheet(rows: list[tuple[Path, np.ndarray, np.ndarray]], classes: list[str], path: Path) -> Path:
    """PNG at `path`: for each (image path, labels [H, W], prediction [H, W]) a row image | truth | prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    table = colours(len(classes))
    h, w = rows[0][1].shape
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows) * min(h / w, 1.5) + 0.9), squeeze=False)
    shown: set[int] = set()
    for r, (img_path, lab, pred) in enumerate(rows):
        panels = [read_image(img_path), table[lab.astype(np.int64)], table[pred.astype(np.int64)]]
        for c, (im, title) in enumerate(zip(panels, ("image", "ground truth", "prediction"), strict=True)):
            ax = axes[r, c]
            ax.imshow(im, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title)
        axes[r, 0].set_ylabel(img_path.name, fontsize=8)
        shown |= set(np.unique(lab).tolist()) | set(np.unique(pred).tolist())
    handles = [Patch(color=table[v] / 255.0, label=classes[v] if v != IGNORE else "ignored (255)")
               for v in sorted(shown) if v < len(classes) or v == IGNORE]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * (len(handles) // 6), 1, 1))
    save_image_atomic(path, fig, dpi=100)
    plt.close(fig)
    return path
