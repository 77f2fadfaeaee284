"""`dora-eval davis`: label propagation over DAVIS-2017 sequences with a frozen encoder, indexed PNGs per
sequence (resumable: a sequence's folder appears only when all its frames are written, and OUT is
resumed only by the same checkpoint content, model and parameters), then the semi-supervised scores."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from dora.eval.common import Encoder
from dora.eval.davis_data import Sequence, read_labels, read_palette, truncated_jpeg, write_indexed
from dora.eval.prefetch import prefetch
from dora.eval.propagation import PropagationCfg, first_labels, propagate, read_frame, to_labels
from dora.eval.resume import another_run, as_read_back, model_stamp
from dora.model import patch_tokens, tokens
from pipeline.errors import InputError
from pipeline.files import write_json_atomic

STAMP = ".davis_run.json"


@torch.no_grad()
def encode(encoder: Encoder, frames: Iterator[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Last-block patch tokens after the final norm, [h·w, d] per frame (DINO's get_intermediate_layers(n=1)),
    computed `batch_size` frames at a time as the frames arrive."""
    batch: list[torch.Tensor] = []
    for x in frames:
        batch.append(x)
        if len(batch) == batch_size:
            yield from _forward(encoder, batch)
            batch = []
    if batch:
        yield from _forward(encoder, batch)


def _forward(encoder: Encoder, batch: list[torch.Tensor]) -> list[torch.Tensor]:
    x = torch.stack(batch).to(encoder.device)
    return list(patch_tokens(encoder.model, tokens(encoder.model, x)).float().unbind(0))


def run_sequence(encoder: Encoder, seq: Sequence, out: Path, cfg: PropagationCfg, batch_size: int,
                 workers: int, bar: tqdm) -> None:
    """OUT/<seq>/<frame>.png for every frame (frame 0 = its ground truth), written into a hidden folder
    that is renamed to OUT/<seq> when complete."""
    tmp = out / f".partial-{seq.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    x0, size = read_frame(seq.frames[0], cfg)
    p = encoder.patch
    grid = (x0.shape[1] // p, x0.shape[2] // p)
    gt0 = read_labels(seq.annotations[0], like=size)
    palette = read_palette(seq.annotations[0])
    write_indexed(tmp / f"{seq.frames[0].stem}.png", gt0, palette)
    bar.update(1)

    def frames() -> Iterator[torch.Tensor]:
        yield x0
        for path, (x, s) in zip(seq.frames[1:], prefetch(lambda q: read_frame(q, cfg), seq.frames[1:], workers),
                                strict=True):
            if s != size:
                raise InputError(f"{path}: {s[1]}x{s[0]} but the sequence's first frame is {size[1]}x{size[0]}")
            yield x

    segs = propagate(first_labels(gt0, grid), encode(encoder, frames(), batch_size), cfg)
    for path, seg in zip(seq.frames[1:], segs, strict=True):
        write_indexed(tmp / f"{path.stem}.png", to_labels(seg, p, size), palette)
        bar.update(1)
    final = out / seq.name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _result_folders(out: Path, names: set[str] | None) -> list[Path]:
    """OUT's partial folders and its folders that hold nothing but PNGs (what run_sequence writes),
    only those in `names` unless it is None."""
    return [d for d in out.iterdir() if d.is_dir() and not d.is_symlink()
            and (d.name.startswith(".partial-")
                 or ((names is None or d.name in names) and all(f.suffix == ".png" for f in d.iterdir())))]


def check_stamp(out: Path, stamp: dict, sequences: list[Sequence], restart: bool = False) -> None:
    """OUT may be resumed only by the same run (same checkpoint content, key, model and parameters);
    `restart` first removes what an earlier run left (its stamp, metrics.json and PNG folders: all of
    them in a folder it stamped, else only this run's sequences)."""
    path = out / STAMP
    stamp = as_read_back(stamp)
    if restart and out.is_dir():
        ours = path.exists()
        for d in _result_folders(out, None if ours else {s.name for s in sequences}):
            shutil.rmtree(d)
        for f in (path, out / "metrics.json") if ours else ():
            f.unlink(missing_ok=True)
    if path.exists():
        old = json.loads(path.read_text())
        if old != stamp:
            raise InputError(another_run(str(out), old, stamp))
        return
    present = [s.name for s in sequences if (out / s.name).is_dir()]
    if present:
        raise InputError(f"{out / present[0]}: results without a {STAMP} saying what made them; give "
                         "--restart to replace them, or a new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, stamp)


def warn_truncated(sequences: list[Sequence]) -> list[str]:
    """Names every frame cut short on stderr (once each) and returns them: cv2, as DINO reads frames,
    decodes what is there and fills the rest, so the run goes on, recorded."""
    bad = [str(f) for s in sequences for f in s.frames if truncated_jpeg(f)]
    for f in bad:
        print(f"warning: {f}: truncated JPEG (no end-of-image marker); propagated from the part that decodes, "
              "as DINO's cv2 reading does; re-copy it for exact results", file=sys.stderr)
    return bad


def run(encoder: Encoder, sequences: list[Sequence], out: Path, cfg: PropagationCfg, batch_size: int,
        workers: int, stamp: dict, quiet: bool = False, restart: bool = False) -> dict:
    """Propagate every sequence not already complete in OUT (all of them with `restart`); returns counts.
    The stamp gets the built model's description (`model_stamp`)."""
    out = Path(out)
    check_stamp(out, {**stamp, "model": model_stamp(encoder)}, sequences, restart)
    truncated = warn_truncated(sequences)
    todo = [s for s in sequences if not (out / s.name).is_dir()]
    total = sum(len(s.frames) for s in sequences)
    done = total - sum(len(s.frames) for s in todo)
    with tqdm(total=total, initial=done, unit="img", desc="davis", disable=quiet, dynamic_ncols=True) as bar:
        for seq in todo:
            bar.set_postfix_str(seq.name)
            run_sequence(encoder, seq, out, cfg, batch_size, workers, bar)
    return {"n_frames": total, "resumed_frames": done, "truncated_frames": truncated}
