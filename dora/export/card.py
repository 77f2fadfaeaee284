"""The model card (README.md) of a Hugging Face export: the run, its data, and evaluation numbers.

The numbers come from `dora-eval` metrics.json files: those passed with `--metrics`, and those found
beside the checkpoint (its folder, or its run folder and the folders below it) that evaluated this very
checkpoint file (same sha256).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import InputError

# metrics.json fields that describe the run rather than give a result
BOOKKEEPING = {"task", "checkpoint", "checkpoint_sha256", "key", "arch", "pos_embed_interpolation",
               "pos_embed_interpolation_why", "feature", "params", "device", "elapsed_s", "versions", "note",
               "images_per_s"}
MAX_NUMBERS = 40  # per metrics file, in the card


def read_metrics(path: Path) -> dict:
    """A dora-eval metrics.json (a folder: its metrics.json), or one InputError line."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: --metrics file not found; give a metrics.json written by dora-eval") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: --metrics is not a JSON file ({str(e).splitlines()[0][:80]}); give a "
                         "metrics.json written by dora-eval") from None
    if not isinstance(data, dict) or "task" not in data:
        raise InputError(f"{path}: --metrics has no \"task\" field; give a metrics.json written by dora-eval")
    return {**data, "_path": str(path.resolve())}


def found_metrics(ckpt: Path, digest: str) -> list[dict]:
    """metrics.json files near `ckpt` (its folder; for runs/NAME/checkpoints/step_N.pth, runs/NAME) and
    two folder levels below, whose checkpoint_sha256 is this checkpoint's."""
    roots = [ckpt.parent] + ([ckpt.parent.parent] if ckpt.parent.name == "checkpoints" else [])
    seen, out = set(), []
    for root in roots:
        for pattern in ("metrics.json", "*/metrics.json", "*/*/metrics.json"):
            for p in sorted(root.glob(pattern)):
                if p in seen:
                    continue
                seen.add(p)
                try:
                    data = json.loads(p.read_text())
                except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if isinstance(data, dict) and data.get("checkpoint_sha256") == digest and "task" in data:
                    out.append({**data, "_path": str(p.resolve())})
    return out


def _numbers(data: dict, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every number in a metrics dict, bookkeeping fields left out."""
    out = []
    for k, v in data.items():
        if not prefix and (k in BOOKKEEPING or k.startswith("_")):
            continue
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out.append((prefix + str(k), v))
        elif isinstance(v, dict):
            out += _numbers(v, f"{prefix}{k}.")
    return out


def _data_lines(state: dict) -> list[str]:
    shards = state.get("shards") or []
    images = state.get("images")
    if shards:
        return [f"- shard folder: `{s}`" for s in shards]
    if images:
        return [f"- image folder (DoRA*): `{images}`"]
    return ["- not recorded in the checkpoint (an export or an official DoRA/DINO file)"]


def model_card(ckpt: Path, state: dict, config: dict, metrics: list[dict], digest: str) -> str:
    """README.md text: YAML front matter, how to load, the run (checkpoint, step, config), the data,
    and each metrics file's numbers (or that there are none)."""
    saved = state.get("config") if isinstance(state.get("config"), dict) else None
    model = (saved or {}).get("model") or {}
    method = (saved or {}).get("dora", {}).get("method", "dora") if saved else None
    run_cfg = ckpt.parent.parent / "config.yaml" if ckpt.parent.name == "checkpoints" else None
    lines = [
        "---", "library_name: transformers", "pipeline_tag: image-feature-extraction",
        "tags: [vision, vit, self-supervised, dora, walking-tours]", "---", "",
        f"# DoRA ViT ({config['hidden_size']} wide, {config['num_hidden_layers']} blocks, "
        f"patch {config['patch_size']})", "",
        "The teacher backbone of a DoRA/DINO run (`dora-train export --to hf`), as a transformers ViTModel.",
        "", "```python", "from transformers import ViTModel", "",
        "model = ViTModel.from_pretrained(FOLDER, add_pooling_layer=False)",
        "tokens = model(pixel_values).last_hidden_state  # [CLS] then the patch tokens, after the final norm",
        "```", "",
        f"Inputs: RGB in [0, 1] normalised with the ImageNet mean and std (preprocessor_config.json), "
        f"{config['image_size']} px. At {config['image_size']} px the tokens equal the timm backbone's "
        "`forward_features`. For other sizes pass `interpolate_pos_encoding=True`: transformers resizes the "
        "position embeddings bicubically without antialiasing, which differs slightly from timm's "
        "(antialiased) and DINO's (+0.1 scale) resampling, so tokens there are close but not equal.", "",
        "## Run", "",
        f"- checkpoint: `{ckpt.resolve()}` (sha256 `{digest[:16]}…`)",
        f"- step: {state.get('step', 'not recorded')}",
        f"- config: {f'`{run_cfg}`' if run_cfg and run_cfg.exists() else 'not recorded as a file'}"
        + (f" (method {method}, arch {model.get('arch')}, position-embedding resampling "
           f"{model.get('pos_embed_resample', 'timm')})" if saved else
           " (an export or an official DoRA/DINO file: no config inside)"),
    ]
    if model.get("last_block_heads"):
        lines.append(f"- the run split the last block's attention into {model['last_block_heads']} heads "
                     f"(model.last_block_heads); this export uses {config['num_attention_heads']} in every block")
    lines += ["", "## Data", "", *_data_lines(state), "", "## Evaluation", ""]
    if not metrics:
        lines.append("None: no metrics.json of an evaluation of this checkpoint was passed (`--metrics FILE`) or "
                     "found beside it.")
    for m in metrics:
        same = m.get("checkpoint_sha256") == digest
        lines += [f"### {m['task']} (`{m['_path']}`)", "",
                  f"Evaluated checkpoint: `{m.get('checkpoint', '?')}`"
                  + ("" if same else " (not this file: its sha256 differs)"), ""]
        numbers = _numbers(m)
        lines += [f"- {k}: {v:.6g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in numbers[:MAX_NUMBERS]]
        if len(numbers) > MAX_NUMBERS:
            lines.append(f"- … {len(numbers) - MAX_NUMBERS} more in the file")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
