"""A checkpoint's teacher as a DoRA module (for looking at what it learned), and its attention maps as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dora.checkpoint import backbone_weights, load, load_backbone, resolve_checkpoint
from dora.config import Config, config_from_dict, load_config
from dora.data import normalize
from dora.model import DoRA
from pipeline.errors import InputError
from pipeline.files import save_image_atomic


def teacher_model(ckpt_path: Path, config: Path | None, overrides: tuple[str, ...]) -> tuple[DoRA, Config]:
    """(DoRA module whose teacher backbone holds the checkpoint's weights, its config); a run folder: its newest."""
    from dora.eval.common import apply_pos_embed_choice, model_cfg_from_weights

    state = load(resolve_checkpoint(ckpt_path))
    weights = backbone_weights(state)
    saved = state.get("config")
    if config or not isinstance(saved, dict):
        cfg = load_config(config, overrides)
        if not config:  # an export or an official file: the ViT's shape is read off its weights
            cfg.model = model_cfg_from_weights(weights)
    else:
        cfg = config_from_dict(saved, overrides)
    apply_pos_embed_choice(cfg.model, state, weights, config)  # DINO's resampling for official/DINO-format files
    model = DoRA.from_config(cfg).eval()
    load_backbone(model.teacher.backbone, weights)
    return model, cfg


def attention_maps(model, image: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the image as the teacher saw it, uint8 HxWx3 resized so its short side is about `size` and both
    sides are multiples of the patch size; the last block's [CLS] attention weights over the patches
    [heads, H/p, W/p]: softmax over all tokens, so each head's map sums to 1 minus what goes to [CLS]
    and the other prefix tokens)."""
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
    return np.asarray(img), attn.reshape(-1, h // p, w // p).float().numpy()


def attention_figure(img: np.ndarray, maps: np.ndarray, title: str):
    """matplotlib Figure: the image, then one panel per head ("head 0", ...) with its map in a colour
    map drawn over the image, on one colour scale for all heads (the 0.5th to the 99.5th percentile of
    all the weights; values outside get the end colours), and a colour bar naming the values."""
    from matplotlib.figure import Figure

    h, w = img.shape[:2]
    n = len(maps) + 1
    cols = min(n, 4)
    rows = -(-n // cols)
    pw = 3.6  # inches per panel, at 100 dpi
    fig = Figure(figsize=(cols * pw + 1.2, rows * (pw * h / w + 0.4) + 0.6), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    vmin, vmax = (float(v) for v in np.percentile(maps, [0.5, 99.5]))
    vmax = max(vmax, vmin + 1e-12)
    axes[0].imshow(img)
    axes[0].set_title("image")
    shown = None
    for i, m in enumerate(maps):
        ax = axes[i + 1]
        ax.imshow(img)
        shown = ax.imshow(m, cmap="inferno", alpha=0.6, vmin=vmin, vmax=vmax, extent=(0, w, h, 0),
                          interpolation="nearest")
        ax.set_title(f"head {i}")
    for ax in axes:
        ax.set_axis_off()
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (bool(maps.min() < vmin), bool(maps.max() > vmax))]
    bar = fig.colorbar(shown, ax=axes.tolist(), shrink=0.85, extend=extend)
    bar.set_label("[CLS] attention weight")
    fig.suptitle(title)
    return fig


def attention_sheet(model, image: Path, out: Path, size: int) -> Path:
    """PNG: the image, then one panel per head of the last block with its [CLS] attention weights over
    the image, and their colour scale (see `attention_figure`)."""
    img, maps = attention_maps(model, image, size)
    h, w = img.shape[:2]
    fig = attention_figure(img, maps, f"{image.name}: last-block [CLS] attention per head (softmax over all "
                                      f"tokens), input {w}x{h} px, {model.patch} px patches")
    path = out / f"attention_{image.stem}.png"
    save_image_atomic(path, fig)
    return path
