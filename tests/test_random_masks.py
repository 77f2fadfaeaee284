"""Table 2c's random block-wise masks (issue 19, point 10): `dora.mask_source=random` hides 10-50 %
of each view's patches, as iBOT's block masking (pred_ratio 0.3 +- 0.2), so the student sees
50-90 %; `dora.random_mask=keep` is the documented switch where the blocks are what it sees (10-50 %).

The fractions are measured on what the student really gets: real video frames through a timm ViT
teacher (`DoRA.track_objects`), then eq. 7's binary masks (`tracker.object_masks`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dora.config import ConfigError, load_config
from dora.model import tracker
from dora.model.method import DoRA
from pipeline.video.samples import sample_video
from tests.conftest import ROOT
from tests.videos import decode_all

SMOKE = ROOT / "configs" / "smoke.yaml"
SIZE = 224  # 14 x 14 patches of 16 px, as the paper's global crops
DRAWS = 30  # iterations (generators); 2 clips x 2 views x 3 objects each


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """[2, 1, 2, 3, 224, 224]: four real frames of bikes.mp4 as two one-frame clips of two views."""
    _, f = decode_all(sample_video("bikes.mp4"), size=(SIZE, SIZE))
    x = torch.from_numpy(np.stack(f[:4])).permute(0, 3, 1, 2).float() / 255
    return ((x - 0.45) / 0.225).reshape(2, 1, 2, 3, SIZE, SIZE)


def hidden_fractions(frames: torch.Tensor, *overrides: str) -> np.ndarray:
    """Fraction of each masked view's pixels that the student does not see, over DRAWS iterations."""
    cfg = load_config(SMOKE, ["dora.mask_source=random", "dora.num_objects=3", f"data.global_size={SIZE}",
                              *overrides])
    torch.manual_seed(0)
    model = DoRA.from_config(cfg).eval()
    grid = (SIZE // 16, SIZE // 16)
    out = []
    for step in range(DRAWS):
        _, maps, _ = model.track_objects(frames, tracker.step_generator(0, 0, step))
        masks = tracker.object_masks(maps.flatten(1, 2), grid, (SIZE, SIZE), cfg.dora.mask)
        hidden = 1 - masks.flatten(-2).mean(-1)
        assert torch.allclose(hidden, 1 - maps.flatten(1, 2).mean(-1))  # eq. 7 keeps the blocks as drawn
        out.append(hidden.flatten())
    return torch.cat(out).numpy()


def test_default_random_masks_hide_10_to_50_percent_as_ibot(frames):
    h = hidden_fractions(frames)
    assert len(h) == DRAWS * 12
    # iBOT: the masked ratio is drawn from U(0.1, 0.5); blocks never overshoot it and may stop short
    assert h.max() <= 0.5 + 1e-6 and h.min() >= 0.05, (h.min(), h.max())
    assert 0.25 <= h.mean() <= 0.32, h.mean()
    assert np.allclose(np.quantile(h, [0.1, 0.5, 0.9]), [0.14, 0.3, 0.46], atol=0.05), np.quantile(h, [0.1, 0.5, 0.9])
    assert load_config(SMOKE).dora.random_mask == "ibot"


def test_keep_switch_shows_the_student_10_to_50_percent(frames):
    h = hidden_fractions(frames, "dora.random_mask=keep")
    seen = 1 - h
    assert seen.min() >= 0.1 - 1e-6 and seen.max() <= 0.6, (seen.min(), seen.max())
    assert 0.25 <= seen.mean() <= 0.35, seen.mean()


def test_random_mask_switch_is_checked():
    with pytest.raises(ConfigError, match="random_mask"):
        load_config(SMOKE, ["dora.random_mask=hide"])
