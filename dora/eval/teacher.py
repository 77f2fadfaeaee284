"""A checkpoint's teacher as a DoRA module (for looking at what it learned), and its attention maps as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dora.checkpoint import backbone_weights, load, load_backbone, resolve_checkpoint
from dora.config import Config, config_from_dict, load_config
from dora.data import normalize
from dora.model import DoRA
from pipeline.errors import InputError


def teacher_model(ckpt_path: Path, config: Path | None, overrides: tuple[str, ...]) -> tuple[DoRA, Config]:
    """(DoRA module whose teacher backbone holds the checkpoint's weights, its config); a run folder: its newest."""
    state = load(resolve_checkpoint(ckpt_path))
    saved = state.get("config") if isinstance(state, dict) else None
    cfg = load_config(config, overrides) if config or not saved else config_from_dict(saved, overrides)
    model = DoRA.from_config(cfg).eval()
    load_backbone(model.teacher.backbone, backbone_weights(state))
    return model, cfg


def attention_sheet(model, image: Path, out: Path, size: int) -> Path:
    """PNG: the image, then one [CLS] attention map per head of the last block."""
    try:
        img = Image.open(image).convert("RGB")
    except OSError as e:
        raise InputError(f"{image}: not a readable image ({e}); give JPEG or PNG files") from None
    p = model.patch
    w, h = img.size
    scale = size / min(w, h)
    w, h = max(p, round(w * scale) // p * p), max(p, round(h * scale) // p * p)
    img = img.resize((w, h), Image.BICUBIC)
    x = normalize(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)
    with torch.no_grad(), model.tap:
        model.teacher.backbone.forward_features(x[None])
        attn = model.tap.cls_attention()[0]  # [heads, n]
    maps = attn.reshape(-1, 1, h // p, w // p)
    maps = F.interpolate(maps, size=(h, w), mode="nearest")[:, 0]
    maps = maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    tiles = [np.asarray(img)] + [(np.stack([m.numpy()] * 3, -1) * np.array([255, 200, 60])).astype(np.uint8)
                                 for m in maps]
    sheet = Image.new("RGB", (w * len(tiles), h))
    for i, t in enumerate(tiles):
        sheet.paste(Image.fromarray(t), (i * w, 0))
    path = out / f"attention_{image.stem}.png"
    sheet.save(path)
    return path
