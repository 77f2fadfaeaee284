"""Linear semantic-segmentation probe on a frozen backbone (dinov2's "linear" ADE20K evaluation, one process).

Feature (`features`), from the frozen encoder's blocks, each output after the final norm, as a
[B, C, H/p, W/p] map:
- `last`: the last block's patch tokens (C = d; dinov2's linear config: out_indices[-1], BNHead in_index [3]);
- `last4`: for each of the last 4 blocks its patch tokens and its [CLS] token broadcast over the grid,
  concatenated (C = 8d; dinov2's BNHead takes a [CLS] as a 1x1 map resized to the grid, as its depth
  "linear 4" head does);
- `last4-patch`: the last 4 blocks' patch tokens only (C = 4d; dinov2's "+ms" head input, without its
  multi-scale, flipped test).
Head: BatchNorm2d(C) then a 1x1 Conv2d(C, classes) (dinov2's BNHead; conv weights N(0, 0.01), bias 0, as
mmseg's decode heads), logits upsampled bilinearly (align_corners False) to the input size. Inputs whose
sides are not multiples of the patch are padded (bottom/right) and the logits cropped back.
Loss: cross-entropy, ignore_index 255, averaged over all pixels with ignored ones counting 0 (mmseg 0.x's
CrossEntropyLoss with avg_non_ignore False, which dinov2's config runs).
Optimiser (dinov2's config): AdamW lr 1e-3, betas (0.9, 0.999), weight decay 1e-4 on every head parameter;
per-iteration poly schedule, power 1, to 0, after a linear warm-up from 1e-6 x lr (mmcv's
`policy='poly', warmup='linear'`); 40,000 iterations at batch 16 (8 GPUs x 2) with 1,500 warm-up
iterations; shorter runs keep that warm-up fraction (3.75 %).
Validation (dinov2's test_cfg): the image rescaled to short side `crop`, sliding crop x crop windows with
stride floor(2 crop / 3) (512/341), logits averaged where windows overlap, rescaled bilinearly to the
original size and argmaxed; scored by seg_metrics (mmseg's IoUMetric).

Resume: OUT/checkpoint.pth (atomic, every `save_every` iterations) holds the head, the optimiser, the
iteration and the protocol (the checkpoint's sha256, how the encoder was built, every setting that changes
a number); a rerun resumes only the same protocol. Iteration t's batch is samples t*B .. t*B+B-1 of a
stream fixed by the seed (seg_data.TrainCrops), so a run killed at any moment and started again ends with
the same numbers as one never stopped (bit for bit on a CPU; on a GPU, the backward of the bilinear
upsampling adds atomically, so to float rounding).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dora.checkpoint import save_atomic
from dora.eval.features import autocast, block_outputs
from dora.eval.resume import another_run
from dora.eval.seg_data import SegLayout, TrainCrops, ValImages, first_error
from dora.eval.seg_metrics import IGNORE, SegScores
from pipeline.errors import InputError
from pipeline.files import write_text_atomic

FEATURES = {"last": (1, False), "last4": (4, True), "last4-patch": (4, False)}  # blocks, with [CLS]
FREE = {"workers", "save_every"}  # may change between a run and its resumption (no number depends on them)
OUTPUTS = ("checkpoint.pth", "metrics.jsonl", "metrics.json", "segment_sheet.png")  # what --restart removes
DINOV2_ITERS, DINOV2_WARMUP = 40000, 1500


@dataclass
class SegParams:
    features: str = "last"
    crop: int = 512
    ratio: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    iters: int = DINOV2_ITERS
    warmup_iters: int = DINOV2_WARMUP
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    save_every: int = 500
    precision: str = "fp32"
    workers: int = 4

    @property
    def stride(self) -> int:
        return self.crop * 2 // 3


def seg_warmup(iters: int) -> int:
    """dinov2's warm-up share of the run: 1,500 of 40,000 iterations."""
    return round(iters * DINOV2_WARMUP / DINOV2_ITERS)


def poly_lr(base: float, it: int, iters: int, warmup: int, warmup_ratio: float = 1e-6) -> float:
    """mmcv's poly schedule (power 1, min 0) with linear warm-up: the lr of iteration `it` (0-based)."""
    lr = base * (1.0 - it / iters)
    if it < warmup:
        lr *= 1.0 - (1.0 - it / warmup) * (1.0 - warmup_ratio)
    return lr


def dense_features(model: nn.Module, x: torch.Tensor, features: str) -> torch.Tensor:
    """[B, C, H/p, W/p]: the frozen feature `features` of images x [B, 3, H, W] (sides multiples of p)."""
    n, with_cls = FEATURES[features]
    p = int(model.patch_embed.patch_size[0])
    b, h, w = x.shape[0], x.shape[-2] // p, x.shape[-1] // p
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    maps = []
    for out in block_outputs(model, x, n):
        maps.append(out[:, prefix:].transpose(1, 2).reshape(b, -1, h, w))
        if with_cls:
            maps.append(out[:, 0, :, None, None].expand(-1, -1, h, w))
    return torch.cat(maps, 1)


class SegHead(nn.Module):
    """dinov2's BNHead: BatchNorm2d over the channels, then a 1x1 convolution to the class logits."""

    def __init__(self, channels: int, num_classes: int, seed: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, num_classes, 1)
        with torch.no_grad():
            self.conv.weight.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(seed))
            self.conv.bias.zero_()

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(feat))


class SegmentProbe:
    """One probe run in OUT: checkpoint.pth, metrics.jsonl (training loss), segment_sheet.png."""

    def __init__(self, encoder, layout: SegLayout, out: Path, p: SegParams, quiet: bool = False, say=print,
                 restart: bool = False, sheet_n: int = 6):
        if p.features not in FEATURES:
            raise InputError(f"--features {p.features!r}: choose {', '.join(FEATURES)}")
        if FEATURES[p.features][0] > encoder.depth:
            raise InputError(f"--features {p.features}: the encoder has {encoder.depth} blocks")
        self.enc, self.layout, self.out, self.p = encoder, layout, Path(out), p
        self.quiet, self.say, self.restart, self.sheet_n = quiet, say, restart, sheet_n
        self.device, self.model, self.patch = encoder.device, encoder.model, encoder.patch
        n, with_cls = FEATURES[p.features]
        self.channels = encoder.embed_dim * n * (2 if with_cls else 1)
        self.num_classes = len(layout.classes)

    def protocol(self) -> dict:
        """Everything the numbers depend on (a resumption must match it)."""
        e = self.enc
        return {**{k: v for k, v in asdict(self.p).items() if k not in FREE}, "ratio": list(self.p.ratio),
                "checkpoint_sha256": e.sha256(), "key": e.key, "arch": e.arch, "num_heads": e.num_heads,
                "pos_embed": e.pos_embed, "layout": self.layout.kind, "num_classes": self.num_classes,
                "n_train": len(self.layout.train), "n_val": len(self.layout.val)}

    def logits(self, head: SegHead, x: torch.Tensor) -> torch.Tensor:
        """[B, classes, H, W] logits of images x [B, 3, H, W] (padded to the patch grid, cropped back)."""
        h, w = x.shape[-2:]
        ph, pw = -h % self.patch, -w % self.patch
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        with torch.no_grad(), autocast(self.device, self.p.precision):
            feat = dense_features(self.model, x, self.p.features)
        out = head(feat.float())
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)[..., :h, :w]

    def _resume(self, head: SegHead, opt: torch.optim.Optimizer) -> tuple[int, list[dict]]:
        path = self.out / "checkpoint.pth"
        if not path.exists():
            return 0, []
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("protocol") != self.protocol():
            raise InputError(another_run(str(path), state.get("protocol") or {}, self.protocol()))
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        return state["iter"], state["history"]

    def _save(self, head: SegHead, opt: torch.optim.Optimizer, it: int, history: list[dict]) -> None:
        save_atomic({"iter": it, "head": head.state_dict(), "optimizer": opt.state_dict(), "history": history,
                     "protocol": self.protocol()}, self.out / "checkpoint.pth")
        write_text_atomic(self.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    def train(self, head: SegHead, opt: torch.optim.Optimizer, start: int, history: list[dict]) -> None:
        """Iterations start .. iters-1, a checkpoint every save_every iterations and at the end."""
        p = self.p
        data = TrainCrops(self.layout.train, p.crop, p.ratio, p.cat_max_ratio, p.seed)
        loader = torch.utils.data.DataLoader(data, batch_size=p.batch_size, num_workers=p.workers,
                                             sampler=range(start * p.batch_size, p.iters * p.batch_size),
                                             pin_memory=self.device.type == "cuda")
        head.train()
        losses: list[float] = []
        bar = tqdm(loader, total=p.iters, initial=start, desc="segment: train", unit="it", disable=self.quiet,
                   dynamic_ncols=True, smoothing=0.05)
        for it, (x, y, errors) in enumerate(bar, start):
            first_error(errors)
            lr = poly_lr(p.lr, it, p.iters, p.warmup_iters)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss = F.cross_entropy(self.logits(head, x), y, ignore_index=IGNORE, reduction="none").mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}")
            if (it + 1) % p.save_every == 0 or it + 1 == p.iters:
                history.append({"iter": it + 1, "lr": lr, "train_loss": sum(losses) / len(losses)})
                losses = []
                self._save(head, opt, it + 1, history)
        bar.close()

    @torch.no_grad()
    def slide(self, head: SegHead, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[classes, H, W] logits at the original size `size` of a rescaled image x [3, h, w]: mmseg's
        slide inference (crop x crop windows, stride, overlapping logits averaged), then a bilinear resize."""
        crop, stride = self.p.crop, self.p.stride
        h, w = x.shape[-2:]
        boxes = []
        for i in range(max(h - crop + stride - 1, 0) // stride + 1):
            for j in range(max(w - crop + stride - 1, 0) // stride + 1):
                y2, x2 = min(i * stride + crop, h), min(j * stride + crop, w)
                boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
        acc = torch.zeros(self.num_classes, h, w, device=self.device)
        count = torch.zeros(1, h, w, device=self.device)
        for k in range(0, len(boxes), self.p.batch_size):
            chunk = boxes[k:k + self.p.batch_size]
            out = self.logits(head, torch.stack([x[:, a:b, c:d] for a, b, c, d in chunk]))
            for (a, b, c, d), o in zip(chunk, out, strict=True):
                acc[:, a:b, c:d] += o
                count[:, a:b, c:d] += 1
        acc /= count
        return F.interpolate(acc[None], size=size, mode="bilinear", align_corners=False)[0]

    @torch.no_grad()
    def validate(self, head: SegHead) -> tuple[dict, list]:
        """Scores over the val split, and (image, labels, prediction) of its first `sheet_n` images."""
        head.eval()
        loader = torch.utils.data.DataLoader(ValImages(self.layout.val, self.p.crop), batch_size=None,
                                             num_workers=self.p.workers)
        sc, shown = SegScores(self.num_classes), []
        for x, lab, i, err in tqdm(loader, total=len(self.layout.val), desc="segment: val", unit="img",
                                   disable=self.quiet, dynamic_ncols=True):
            first_error([err])
            pred = self.slide(head, x.to(self.device), tuple(lab.shape)).argmax(0).cpu()
            sc.add(pred, lab)
            if i < self.sheet_n:
                shown.append((self.layout.val.images[i], lab.numpy(), pred.numpy()))
        return sc.result(self.layout.classes), shown

    def fit(self) -> dict:
        """Train (or resume) the head, score the val split, draw the sheet; the run's results."""
        p = self.p
        self.out.mkdir(parents=True, exist_ok=True)
        if self.restart:
            for name in OUTPUTS:
                (self.out / name).unlink(missing_ok=True)
        head = SegHead(self.channels, self.num_classes, p.seed).to(self.device)
        opt = torch.optim.AdamW(head.parameters(), lr=p.lr, betas=(0.9, 0.999), weight_decay=p.weight_decay)
        start, history = self._resume(head, opt)
        if start > 0:
            self.say(f"resuming after iteration {start} from {self.out / 'checkpoint.pth'}")
        if start < p.iters:
            self.train(head, opt, start, history)
        res, shown = self.validate(head)
        if shown:
            from dora.eval.seg_sheet import segment_sheet

            segment_sheet(shown, self.layout.classes, self.out / "segment_sheet.png")
        return {"layout": self.layout.kind, "n_train": len(self.layout.train), "n_val": len(self.layout.val),
                "num_classes": self.num_classes, "feature_dim": self.channels, "iters_run": p.iters,
                "train_loss_last": history[-1]["train_loss"] if history else None,
                "results": {k: res[k] for k in ("mIoU", "mAcc", "aAcc", "n_classes_scored")},
                "per_class": res["per_class"]}


def seg_iters(epochs: int | None, iters: int | None, n_train: int, batch: int) -> int:
    """The run's iterations: --iters, or --epochs passes over the train split, or dinov2's 40,000."""
    if epochs is not None and iters is not None:
        raise InputError("give --iters or --epochs, not both")
    if epochs is not None:
        return epochs * math.ceil(n_train / batch)
    return DINOV2_ITERS if iters is None else iters
