"""`dora-data verify`: re-read a shard folder and check it against its dataset index (dataset.json)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.dataset.health import dataset_warnings
from pipeline.dataset.reader import Dataset
from pipeline.format import index_path, read_index


def jpeg_ok(data: bytes) -> bool:
    """Strict JPEG check: starts with SOI, ends with EOI, and decodes completely."""
    if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return False
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Exception:
        return False


def _check_shard(path: Path, entry: dict, rng: np.random.Generator, sample: float, errors: list[str]) -> dict:
    """Walk one tar: integrity, sample grouping, JPEGs (a fraction), and agreement with its index."""
    counts = {"samples": 0, "frames": 0, "frame_bytes": 0, "jpegs_checked": 0}
    if not path.exists():
        errors.append(f"{path.name}: missing")
        return counts
    if path.stat().st_size != entry["bytes"]:
        errors.append(f"{path.name}: {path.stat().st_size} bytes, dataset.json says {entry['bytes']}")
    offsets: dict[str, tuple[int, int]] = {}
    keys: list[str] = []
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, ext = m.name.split(".", 1)
                if not keys or keys[-1] != key:
                    keys.append(key)
                offsets[m.name] = (m.offset_data, m.size)
                if ext.endswith(".jpg"):
                    counts["frames"] += 1
                    counts["frame_bytes"] += m.size
                    if sample >= 1.0 or rng.random() < sample:
                        counts["jpegs_checked"] += 1
                        if not jpeg_ok(tar.extractfile(m).read()):
                            errors.append(f"{path.name}: {m.name} is not a complete JPEG")
                elif ext == "json":
                    json.loads(tar.extractfile(m).read())
    except (tarfile.TarError, OSError, ValueError, EOFError) as e:
        errors.append(f"{path.name}: unreadable tar ({e})")
        return counts
    counts["samples"] = len(keys)
    if len(set(keys)) != len(keys):
        errors.append(f"{path.name}: a sample's members are not contiguous")
    for what in ("n_samples", "n_frames"):
        got = counts["samples" if what == "n_samples" else "frames"]
        if got != entry[what]:
            errors.append(f"{path.name}: {got} {what[2:]}, dataset.json says {entry[what]}")
    try:
        idx = read_index(index_path(path))
        listed = {m.name: (m.offset, m.size) for s in idx for m in s}
        if listed != offsets or len(idx) != len(keys):
            errors.append(f"{index_path(path).name}: does not match the tar's members")
    except (OSError, ValueError, IndexError) as e:
        errors.append(f"{index_path(path).name}: unreadable index ({e})")
    return counts


def verify(root: Path, sample: float = 0.05, seed: int = 0, quiet: bool = False) -> dict:
    """Check every shard and frame table; returns the report that `--json` prints. Its `warnings` (videos
    without clips, stored above their frame rate, dropped or unfinished) do not make it fail."""
    ds = Dataset(root)
    rng = np.random.default_rng(seed)
    errors: list[str] = []
    totals = {"samples": 0, "frames": 0, "frame_bytes": 0, "jpegs_checked": 0}
    for i, entry in enumerate(tqdm(ds.shards, desc="verify", unit="shard", disable=quiet)):
        for k, v in _check_shard(ds.shard_path(i), entry, rng, sample, errors).items():
            totals[k] += v
    distinct_frames, distinct_bytes = 0, 0
    for v in ds.videos:
        tab = ds.table(v["name"])
        distinct_frames += len(tab)
        distinct_bytes += int(tab.size.sum())
        if len(tab) != v["n_frames"]:
            errors.append(f"frames/{v['name']}.npz: {len(tab)} frames, dataset.json says {v['n_frames']}")
        if len(tab) and (tab.shard.min() < 0 or tab.shard.max() >= len(ds.shards)):
            errors.append(f"frames/{v['name']}.npz: points at shards that do not exist")
            continue
        for row in rng.choice(len(tab), size=min(len(tab), max(1, int(len(tab) * sample))), replace=False):
            try:
                if not jpeg_ok(ds.read_frame(v["name"], int(row))):
                    errors.append(f"frames/{v['name']}.npz: row {row} does not point at a JPEG")
            except OSError as e:
                errors.append(str(e))
    duplication = totals["frame_bytes"] / distinct_bytes if distinct_bytes else 0.0
    return {"ok": not errors, "shards": len(ds.shards), "samples": totals["samples"], "frames": totals["frames"],
            "distinct_frames": distinct_frames, "held_slots": sum(v.get("n_held_slots", 0) for v in ds.videos),
            "videos": len(ds.videos), "duplication": round(duplication, 4),
            "jpegs_checked": totals["jpegs_checked"], "pending": ds.meta.get("pending", []), "errors": errors,
            "warnings": dataset_warnings(ds)}
