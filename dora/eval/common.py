"""What every frozen-feature evaluation shares: the encoder from any checkpoint, the device, and the
run record written as `metrics.json`.

A checkpoint is anything `dora-eval attention` accepts: a `dora-train` checkpoint (its saved config
names the architecture), an export (`--to timm|dino`) or an official DoRA/DINO file (the architecture
is read off the weights). Loading is strict: a missing or unexpected key is an InputError; nothing is
ever downloaded or substituted.

Position embeddings at other input sizes are resampled the way the code that made the file does
(`pos_embed_choice`): official DoRA/DINO files and DINO-format exports with DINO's interpolate_pos_encoding,
our checkpoints as their saved config says, timm-format state dicts with timm's; metrics.json records it.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dora.checkpoint import backbone_weights, load, load_backbone, resolve_checkpoint
from dora.config import ModelCfg, config_from_dict
from pipeline.errors import InputError
from pipeline.files import write_json_atomic
from pipeline.video import sha256_file

# Heads of the standard ViT widths (the weights do not say how q/k are split).
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
NAME_BY_WIDTH = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge"}


@dataclass
class Encoder:
    """A frozen timm ViT in eval mode and what it is."""

    model: nn.Module
    arch: str
    patch: int
    embed_dim: int
    depth: int
    num_heads: int
    checkpoint: Path
    key: str
    device: torch.device
    pos_embed: str = "timm"  # position-embedding resampling at other sizes: timm | dino
    pos_embed_why: str = ""  # why that one (recorded in metrics.json)
    _sha256: str | None = field(default=None, repr=False)

    def run_precision(self, precision: str, say=None) -> str:
        """The forward precision that really runs for `precision` here (fp32 off a GPU; said once via `say`)."""
        from dora.eval.features import run_precision

        return run_precision(self.device, precision, say)

    def sha256(self) -> str:
        """The checkpoint file's sha256 (computed once)."""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.checkpoint)
        return self._sha256


def pick_device(name: str) -> torch.device:
    """`auto` is cuda when available, else cpu; `cuda` without a GPU is an InputError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is visible here; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise InputError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def model_cfg_from_weights(weights: dict[str, torch.Tensor]) -> ModelCfg:
    """The ViT shape read off backbone weights (official DoRA/DINO files and exports carry no config)."""
    if "pos_embed" not in weights or "patch_embed.proj.weight" not in weights:
        raise InputError("checkpoint backbone has no pos_embed / patch_embed.proj.weight: not a ViT")
    width = int(weights["pos_embed"].shape[-1])
    patch = int(weights["patch_embed.proj.weight"].shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blocks."))
    if width not in HEADS_BY_WIDTH:
        raise InputError(f"checkpoint ViT width {width} is not a standard one ({sorted(HEADS_BY_WIDTH)}); "
                         "pass --config with model.arch/num_heads")
    if patch not in (8, 16):
        raise InputError(f"checkpoint ViT patch size {patch} is not 8 or 16; pass --config with model.arch")
    side = math.isqrt(int(weights["pos_embed"].shape[1]) - 1)  # the grid the position embeddings were made for
    return ModelCfg(arch=f"vit_{NAME_BY_WIDTH[width]}_patch{patch}_224", depth=depth, embed_dim=width,
                    num_heads=HEADS_BY_WIDTH[width], drop_path=0.0,
                    img_size=None if side * patch == 224 else side * patch)


def dino_format(state: dict) -> bool:
    """Whether `state` was written by the official DoRA/DINO code or `dora-train export --to dino`: a
    `teacher`/`student` state dict, or keys prefixed `module.`/`backbone.` (MultiCropWrapper, DDP)."""
    if "model" in state and "config" in state:  # ours
        return False
    if any(isinstance(state.get(k), dict) for k in ("teacher", "student")):
        return True
    return any(isinstance(k, str) and k.startswith(("module.", "backbone.")) for k in state)


def _config_resample(config: Path | None) -> str | None:
    """model.pos_embed_resample when the YAML file `config` sets it, else None."""
    import yaml

    from dora.config import load_config, resolve_config

    if config is None:
        return None
    data = yaml.safe_load(resolve_config(config).read_text()) or {}
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, dict) and "pos_embed_resample" in model:
        return load_config(config).model.pos_embed_resample
    return None


def pos_embed_choice(state: dict, config: Path | None = None) -> tuple[str, str]:
    """(timm|dino, why): how the checkpoint `state` resamples its position embeddings at other input sizes.

    The code that made the file decides: `config` when it sets model.pos_embed_resample; our checkpoints
    their saved config; `export --to dino` files the run's mode they record; official DoRA/DINO files
    DINO's interpolate_pos_encoding (what DINO's and the official DoRA evaluations run); timm-format
    state dicts (`export --to timm`) timm's.
    A bare backbone-only release (e.g. DINO's *_pretrain.pth) looks like a timm export: give a --config
    with `model: {pos_embed_resample: dino}` to evaluate it as DINO does.
    """
    explicit = _config_resample(config)
    if explicit is not None:
        return explicit, f"--config {config} sets model.pos_embed_resample"
    saved = state.get("config")
    if isinstance(saved, dict) and "model" in saved:
        return config_from_dict(saved).model.pos_embed_resample, "the checkpoint's saved config"
    if state.get("pos_embed_resample") in ("timm", "dino"):
        return state["pos_embed_resample"], "recorded in the file by dora-train export --to dino (the run's own)"
    if dino_format(state):
        return "dino", "official DoRA/DINO-format checkpoint: DINO's interpolate_pos_encoding, as its code evaluates it"
    return "timm", ("timm-format state dict (export --to timm): timm's resampling; for a DINO backbone-only "
                    "release give --config with model.pos_embed_resample: dino")


def apply_pos_embed_choice(mcfg: ModelCfg, state: dict, weights: dict[str, torch.Tensor],
                           config: Path | None = None) -> tuple[str, str]:
    """Set mcfg.pos_embed_resample by `pos_embed_choice`; with DINO's, also build the model on the stored
    grid (img_size), so loading never resamples and every other size is resampled from it as DINO does."""
    mode, why = pos_embed_choice(state, config)
    mcfg.pos_embed_resample = mode
    if mode == "dino" and "pos_embed" in weights and "patch_embed.proj.weight" in weights:
        side = math.isqrt(int(weights["pos_embed"].shape[1]) - 1)
        mcfg.img_size = side * int(weights["patch_embed.proj.weight"].shape[-1])
    return mode, why


def load_encoder(path: Path, key: str = "teacher", device: torch.device | str = "cpu",
                 config: Path | None = None) -> Encoder:
    """The `key` (teacher|student) backbone of checkpoint `path` (a run folder: its newest), frozen, on `device`.

    Our checkpoints rebuild the model from their saved `model:` section (appendix B.2's head split
    included); other files from the shape of their weights (or `config`, a YAML file, when given).
    """
    from dora.config import load_config
    from dora.model import create_backbone, num_heads, patch_size

    if key not in ("teacher", "student"):
        raise InputError(f"--key {key!r}: choose teacher or student")
    path = resolve_checkpoint(Path(path))
    state = load(path)
    weights = backbone_weights(state, key)
    saved = state.get("config") if isinstance(state, dict) else None
    if config is not None:
        mcfg = load_config(config).model
    elif isinstance(saved, dict) and "model" in saved:
        mcfg = config_from_dict(saved).model
    else:
        mcfg = model_cfg_from_weights(weights)
    resample, why = apply_pos_embed_choice(mcfg, state, weights, config)
    model = create_backbone(mcfg, drop_path=0.0)
    load_backbone(model, weights)
    dev = torch.device(device)
    model = model.to(dev).eval().requires_grad_(False)
    return Encoder(model=model, arch=mcfg.arch, patch=patch_size(model), embed_dim=int(model.embed_dim),
                   depth=len(model.blocks), num_heads=num_heads(model), checkpoint=Path(path), key=key, device=dev,
                   pos_embed=resample, pos_embed_why=why)


@dataclass
class RunRecord:
    """Collects what an evaluation ran with and found; `write` puts it in OUT/metrics.json."""

    task: str
    encoder: Encoder
    feature: str
    params: dict[str, Any]
    started: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, **results: Any) -> dict[str, Any]:
        import timm

        enc = self.encoder
        return {
            "task": self.task,
            "checkpoint": str(enc.checkpoint),
            "checkpoint_sha256": enc.sha256(),
            "key": enc.key,
            "arch": {"name": enc.arch, "patch": enc.patch, "embed_dim": enc.embed_dim, "depth": enc.depth,
                     "num_heads": enc.num_heads},
            "pos_embed_interpolation": enc.pos_embed,
            "pos_embed_interpolation_why": enc.pos_embed_why,
            "feature": self.feature,
            "params": self.params,
            **self.extra,
            **results,
            "device": str(enc.device),
            "elapsed_s": round(time.time() - self.started, 3),
            "versions": {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()},
        }

    def write(self, out: Path | None, echo_json: bool = False, **results: Any) -> dict[str, Any]:
        """Write OUT/metrics.json atomically (when `out` is given); print it with `echo_json`."""
        data = self.as_dict(**results)
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            write_json_atomic(Path(out) / "metrics.json", data)
        if echo_json:
            print(json.dumps(data, indent=1))
        return data
