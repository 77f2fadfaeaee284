"""What a resumable evaluation (davis, discovery) keys its partial results on: the checkpoint's content,
the settings, and the model actually built from them (what `--config` changes), so that a rerun resumes
only what the same model and settings produced, and names what differs otherwise."""

from __future__ import annotations

import json
from typing import Any

from dora.eval.common import Encoder


def model_stamp(enc: Encoder) -> dict[str, Any]:
    """The built backbone's description, read off the model itself: architecture, widths, the heads of
    every block (appendix B.2's last-block split included), the position-embedding grid and the function
    that resamples it (timm's or DINO's)."""
    m = enc.model
    pos = getattr(m, "pos_embed", None)
    fn = getattr(getattr(m, "_pos_embed", None), "__func__", None)
    return {"arch": enc.arch, "patch": enc.patch, "embed_dim": enc.embed_dim, "depth": enc.depth,
            "heads": [int(b.attn.num_heads) for b in m.blocks],
            "pos_embed_grid": list(pos.shape[1:]) if pos is not None else None,
            "pos_embed": getattr(enc, "pos_embed", None),
            "pos_embed_fn": getattr(fn, "__qualname__", None)}


def as_read_back(stamp: dict) -> dict:
    """The stamp as JSON gives it back (tuples become lists)."""
    return json.loads(json.dumps(stamp))


def _short(v: Any, n: int = 24) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= n else text[: n - 1] + "…"


def stamp_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every entry that differs (nested dicts by dotted key)."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, "(none)"), new.get(k, "(none)")
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += stamp_diff(a, b, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}: {_short(a)} -> {_short(b)}")
    return out


def another_run(where: str, old: dict, new: dict) -> str:
    """The one-line refusal of resuming results that another checkpoint, model or setting produced."""
    diff = stamp_diff(old, new)
    shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
    return (f"{where}: holds results of another run ({shown}); give --restart to replace them, "
            "or a new --out")
