"""`dora-train export --to hf|mmseg|mae|seqtrack`: the teacher backbone in the dense toolkits' formats.

- hf: a folder for transformers' `ViTModel.from_pretrained` (config.json, model.safetensors,
  preprocessor_config.json, README.md model card). It is written into a temporary sibling folder and
  renamed into place, so a kill never leaves a half folder under the final name.
- mmseg: `{"meta", "state_dict"}` in mmsegmentation 1.x VisionTransformer names (vit2mmseg.py's).
- mae: `{"model": timm names}` with the class token's position kept in pos_embed (MAE's fine-tuning;
  detectron2's ViTDet reads MAE files).
- seqtrack: the same `{"model": ...}` layout, which SeqTrack's `load_pretrained(pretrain_type="mae")`
  reads: it drops cls_token and pos_embed[:, 0], resamples the grid and loads strictly.
Files are written atomically (pipeline.files.atomic_open).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from dora.export.card import found_metrics, model_card, read_metrics
from dora.export.vit_keys import heads_of, hf_config, plain_vit, to_hf, to_mae, to_mmseg
from pipeline.errors import InputError
from pipeline.files import atomic_open, check_file_writable, check_writable, write_json_atomic, write_text_atomic
from pipeline.video import sha256_file

DENSE = ("hf", "mmseg", "mae", "seqtrack")
HF_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "README.md")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def claim_target(to: str, out: Path) -> list[Path]:
    """Prove OUT can be written before any work, as the other commands do (one line otherwise): a file
    name for the file formats, a folder (new, empty, or an earlier hf export) for hf. Returns the
    folders it made (innermost first) for `remove_empty`."""
    out = Path(out)
    if to != "hf":
        return check_file_writable(out, "OUT")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; --to hf writes a folder, choose another OUT")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").exists():
        raise InputError(f"{out}: is a folder that holds other files, not an earlier --to hf export; "
                         "choose another OUT (an export replaces only its own folder)")
    return check_writable(out.parent, "OUT")


def _torch_save(obj, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def write_dense(to: str, ckpt: Path, state: dict, weights: dict[str, torch.Tensor], out: Path,
                metrics: tuple[Path, ...] = ()) -> Path:
    """Write `weights` (the teacher backbone, timm names) of checkpoint `ckpt` (contents `state`) to
    OUT in format `to` (one of DENSE)."""
    shape = plain_vit(weights, to)
    if to == "mmseg":
        meta = {"source": "dora-train export --to mmseg", "checkpoint": str(ckpt),
                "step": int(state["step"]) if isinstance(state.get("step"), int) else -1,
                "mmseg_backbone": f"VisionTransformer(embed_dims={shape.width}, num_layers={shape.depth}, "
                                  f"patch_size={shape.patch}, qkv_bias={shape.qkv_bias}, patch_bias=True, "
                                  "final_norm=True, with_cls_token=True, norm_cfg=dict(type='LN', eps=1e-6))"}
        _torch_save({"meta": meta, "state_dict": to_mmseg(weights)}, out)
    elif to in ("mae", "seqtrack"):
        if to == "seqtrack" and not shape.qkv_bias:
            raise InputError("--to seqtrack: SeqTrack's ViT has qkv biases and loads strictly; this backbone has "
                             "none; use --to mae")
        _torch_save({"model": to_mae(weights)}, out)
    elif to == "hf":
        write_hf(ckpt, state, weights, out, metrics)
    else:
        raise InputError(f"--to {to!r}: choose one of {', '.join(DENSE)}")
    return out


def write_hf(ckpt: Path, state: dict, weights: dict[str, torch.Tensor], out: Path,
             metrics: tuple[Path, ...] = ()) -> Path:
    """The hf folder: every file into `.OUT.tmpPID` beside OUT, then renamed to OUT (an earlier export
    there is replaced only after the new folder is complete)."""
    from safetensors.torch import save

    shape = plain_vit(weights, "hf")
    saved = state.get("config") if isinstance(state.get("config"), dict) else None
    config = hf_config(shape, heads_of(weights, saved))
    passed = [read_metrics(p) for p in metrics]  # bad --metrics: one line before anything is written
    digest = sha256_file(ckpt)
    listed = {m["_path"] for m in passed}
    numbers = passed + [m for m in found_metrics(ckpt, digest) if m["_path"] not in listed]
    out = Path(out)
    _remove_stale(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        write_json_atomic(tmp / "config.json", config, indent=2)
        with atomic_open(tmp / "model.safetensors", "wb") as f:
            f.write(save(to_hf(weights), metadata={"format": "pt"}))
        write_json_atomic(tmp / "preprocessor_config.json", {
            "image_processor_type": "ViTImageProcessor", "do_resize": True,
            "size": {"height": shape.image_size, "width": shape.image_size}, "resample": 3,
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD}, indent=2)
        write_text_atomic(tmp / "README.md", model_card(ckpt, state, config, numbers, digest))
        _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _remove_stale(out: Path) -> None:
    """Remove `.OUT.tmpPID` / `.OUT.oldPID` folders left by an export that was killed (its PID is gone)."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(tmp|old)(\d+)$")
    for p in out.parent.glob(f".{out.name}.*"):
        m = pattern.match(p.name)
        if m is None or not p.is_dir():
            continue
        try:
            os.kill(int(m.group(2)), 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished folder `tmp` to `out`; an earlier folder there is moved aside first and removed
    after, so `out` is always absent, the old export or the new one, never a mix."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames reach the disk
    finally:
        os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def describe(to: str, out: Path) -> str:
    """The line `dora-train export` prints: where OUT went and how the toolkit loads it."""
    if to == "hf":
        return (f"{out}: transformers.ViTModel.from_pretrained('{out}', add_pooling_layer=False) "
                "(README.md there names the run, the data and the metrics)")
    if to == "mmseg":
        return (f"{out}: mmseg config backbone=dict(type='VisionTransformer', patch_bias=True, final_norm=True, "
                f"init_cfg=dict(type='Pretrained', checkpoint='{out}'), ...) (or model.pretrained='{out}')")
    if to == "mae":
        return (f"{out}: MAE main_finetune.py --finetune {out} (detectron2's ViTDet and timm: the state dict "
                "under \"model\")")
    return (f"{out}: SeqTrack's encoder, pretrain_type 'mae' (load_pretrained reads \"model\", drops cls_token "
            "and loads strictly)")

