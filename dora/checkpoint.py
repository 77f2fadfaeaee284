"""Checkpoints (atomic, resumable), export of the teacher backbone, import of official DoRA/DINO weights."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import DiskFullError, InputError, disk_full_cause
from pipeline.files import atomic_open

CKPT_RE = re.compile(r"^step_(\d{8})\.pth$")


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, rename: a kill leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def state_bytes(obj) -> int:
    """Bytes of tensor data in a (nested) checkpoint state: about the size of its file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0


def save_step(run: Path, step: int, state: dict, keep: int = 2, keep_every: int = 0) -> Path:
    """runs/NAME/checkpoints/step_NNNNNNNN.pth; then `prune(run, keep, keep_every)`. A full disk raises
    DiskFullError (one line): nothing partial is left, and the previous checkpoint stays."""
    path = run / "checkpoints" / f"step_{step:08d}.pth"
    try:
        save_atomic(state, path)
    except (OSError, RuntimeError, DiskFullError) as e:
        cause = disk_full_cause(e)
        if cause is None:
            raise
        last = latest(run)
        kept = (f"the last good checkpoint {last} is still there and rerunning the same command resumes from it"
                if last else "there is no earlier checkpoint, so a rerun starts from step 0")
        free = shutil.disk_usage(path.parent).free
        raise DiskFullError(f"{path.parent}: disk full while writing the step {step} checkpoint ({cause.strerror}; "
                            f"it needs about {state_bytes(state) / 1e6:.0f} MB, {free / 1e6:.0f} MB are free); "
                            f"{kept}. Free space, then rerun") from None
    prune(run, keep, keep_every)
    return path


def kept(steps: list[int], keep: int, keep_every: int = 0) -> set[int]:
    """The checkpoint steps to keep: the newest `keep`, and every multiple of `keep_every` (if > 0)."""
    newest = set(sorted(steps)[-keep:]) if keep > 0 else set()
    return newest | ({s for s in steps if s % keep_every == 0} if keep_every > 0 else set())


def prune(run: Path, keep: int, keep_every: int = 0) -> None:
    """Delete the run's step checkpoints that `kept` does not keep (train.keep_checkpoints, train.keep_every)."""
    found = {int(CKPT_RE.match(p.name).group(1)): p for p in list_checkpoints(run)}
    for step in set(found) - kept(list(found), keep, keep_every):
        found[step].unlink(missing_ok=True)


def list_checkpoints(run: Path) -> list[Path]:
    folder = run / "checkpoints"
    return sorted(p for p in folder.iterdir() if CKPT_RE.match(p.name)) if folder.exists() else []


def latest(run: Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file as given, or a run folder's newest `checkpoints/step_*.pth`."""
    path = Path(path)
    if not path.is_dir():
        return path
    newest = latest(path)
    if newest is None:
        raise InputError(f"{path}: no checkpoints/step_*.pth in this run folder; train first, or give a file")
    return newest


def load(path: Path) -> dict:
    """A checkpoint file's (or a run folder's newest) contents, a dict; or one InputError line: missing, a
    folder without checkpoints, not a torch file."""
    path = resolve_checkpoint(Path(path))  # a run folder: its newest checkpoint
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise InputError(f"{path}: checkpoint not found; check the path") from None
    except (RuntimeError, EOFError, OSError, ValueError, UnicodeDecodeError, pickle.UnpicklingError,
            AttributeError, ImportError, IndexError, KeyError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise InputError(f"{path}: not a torch checkpoint ({why}); give a file written by dora-train, "
                         "dora-train export, or the official DoRA/DINO code") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict; give a file written by "
                         "dora-train, dora-train export, or the official DoRA/DINO code")
    return state


def backbone_weights(ckpt: dict, key: str = "teacher") -> dict[str, torch.Tensor]:
    """The teacher backbone's weights in timm names, from our checkpoints or official DoRA/DINO ones.

    Ours: state["model"]["teacher.backbone.*"]. Official: ckpt["teacher"] with "module." and
    "backbone." prefixes and the DINO head ("head.*") next to it. A bare state dict works too.
    """
    if "model" in ckpt and any(k.startswith(f"{key}.backbone.") for k in ckpt["model"]):
        sd = ckpt["model"]
        prefix = f"{key}.backbone."
        return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    sd = ckpt.get(key, ckpt)
    if not isinstance(sd, dict):
        raise InputError(f"checkpoint entry {key!r} is not a state dict")
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.").removeprefix("backbone.")
        if k.startswith("head.") or not isinstance(v, torch.Tensor):
            continue
        out[k] = v
    if not any(k.startswith("blocks.") for k in out):
        raise InputError(f"checkpoint has no ViT backbone under {key!r} (keys like blocks.0.attn.qkv.weight)")
    return out


def load_backbone(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load backbone weights into a timm ViT; the position embedding is resized if needed."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        weights = checkpoint_filter_fn(dict(weights), model)
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shapes differ: another width, patch size or depth than the model built
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln] or [str(e).splitlines()[0]]
        raise InputError(f"the checkpoint's backbone does not fit the model built ({model.embed_dim} wide, "
                         f"{len(model.blocks)} blocks): {lines[0][:160]}; give the --config the checkpoint was "
                         "trained with, or none (its own config, or the shape read off its weights)") from None
    missing = [k for k in missing if not k.startswith("head")]
    if missing or unexpected:
        raise InputError(f"backbone weights do not fit {type(model).__name__}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}; check model.arch")


EXPORT_FORMATS = ("timm", "dino", "hf", "mmseg", "mae", "seqtrack")


def export(ckpt_path: Path, to: str, out: Path, key: str = "teacher", metrics: tuple[Path, ...] = ()) -> Path:
    """Write the teacher backbone for timm (`pretrained_cfg_overlay=dict(file=OUT)`) or for DINO's
    evaluation scripts (`--pretrained_weights OUT --checkpoint_key teacher`). A DINO-format file also
    records how the run resampled position embeddings (`pos_embed_resample`, a key DINO's scripts
    ignore), so `dora-eval` evaluates the export as the run trained. The dense toolkits' formats (hf,
    mmseg, mae, seqtrack; `metrics`: metrics.json files for the hf model card) are written by dora.export."""
    if to not in EXPORT_FORMATS:
        raise InputError(f"--to {to!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    ckpt_path = resolve_checkpoint(Path(ckpt_path))  # a run folder: its newest checkpoint
    state = load(ckpt_path)
    weights = backbone_weights(state, key)
    if to not in ("timm", "dino"):
        from dora.export import write_dense

        return write_dense(to, Path(ckpt_path), state, weights, Path(out), tuple(metrics))
    if to == "timm":
        if out.suffix == ".safetensors":
            from safetensors.torch import save

            with atomic_open(out, "wb") as f:
                f.write(save({k: v.contiguous() for k, v in weights.items()}))
        else:
            save_atomic(weights, out)
    elif to == "dino":
        saved = state.get("config")
        if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
            mode = saved["model"].get("pos_embed_resample", "timm")
        else:  # an official DoRA/DINO file, or an earlier DINO-format export: DINO's code trained it
            mode = state.get("pos_embed_resample", "dino")
        save_atomic({"teacher": {f"backbone.{k}": v for k, v in weights.items()}, "pos_embed_resample": mode}, out)
    return out
