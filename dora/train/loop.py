"""The training loop of `dora-train`: one process per GPU (torchrun) or a single CPU/GPU process."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from dora import checkpoint as ckpt
from dora.config import Config
from dora.data import BatchSource, ImageSource, Loader, choose_backend
from dora.model import DoRA, map_entropy, mask_coverage
from dora.train.bad_clips import BadClips
from dora.train.distributed import gather, rng_state, set_rng_state, setup_distributed
from dora.train.health import CollapseWatch, statistics
from dora.train.monitor import Monitor, TrackingSheets
from dora.train.plan import RunPlan, StepTimer, check_memory, cpu_notice, probe_clip_seconds
from dora.train.schedules import build_optimizer, total_steps
from dora.train.step import TrainStep
from pipeline.errors import InputError, TrainingDiverged
from pipeline.files import write_text_atomic
from pipeline.format import ShardFolder

# keys that may change between a checkpoint and its resumption (they do not change the numbers)
FREE_KEYS = {"train.checkpoint_every", "train.log_every", "train.maps_every", "train.num_workers", "train.loader",
             "train.epochs", "train.max_bad_fraction", "eval.knn_data", "eval.every_epochs", "eval.knn_k",
             "eval.knn_temperature", "eval.knn_crop", "eval.knn_batch_size", "train.keep_checkpoints",
             "train.collapse_logs", "train.collapse_entropy", "train.collapse_mass", "train.memory_check"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


# keys added after checkpoints were first written: the value that reproduces what such a checkpoint ran,
# and the setting under which the key matters at all (None: always)
OLD_MEANING = {"loss.teacher_temp_per": ("step", None), "dora.random_mask": ("keep", ("dora.mask_source", "random"))}


def _check_same(saved: dict, cfg: Config, path: Path) -> None:
    a, b = _flat(saved), _flat(cfg.to_dict())
    for key, (value, when) in OLD_MEANING.items():
        if key not in a:
            if when is not None and a.get(when[0]) != when[1]:
                a[key] = b.get(key)  # the key changes nothing in this run
                continue
            a[key] = value
            if b.get(key) != value:
                raise InputError(f"{path}: was made before {key} existed, with {key}={value}; resume with the "
                                 f"override {key}={value}, or use another --output")
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in FREE_KEYS)
    if diff:
        raise InputError(f"{path}: was made with other options ({', '.join(diff[:6])}); resume with the same "
                         "--config and overrides, or use another --output")


class Trainer:
    def __init__(self, shards: list[str], cfg: Config, run: Path, resume: str = "auto", quiet: bool = False,
                 images: str | None = None, names: list[str] | None = None):
        self.images = str(images) if images else None  # DoRA⋆ (appendix D): an image folder instead of shards
        for s in [] if self.images else shards:
            ShardFolder(s).require_finished()
        self.cfg, self.run, self.shards = cfg, run, list(map(str, shards))
        self.names = list(map(str, names or shards))  # as the user gave them (URLs of staged copies): the records
        self.rank, self.world, self.device = setup_distributed()
        torch.manual_seed(cfg.train.seed + self.rank)
        np.random.seed(cfg.train.seed + self.rank)
        random.seed(cfg.train.seed + self.rank)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.source = self._source(self.rank, self.world)
        self.iters_per_epoch = self.source.steps_per_epoch()
        self.total = total_steps(cfg.train.epochs, self.iters_per_epoch)
        self.global_batch = cfg.train.batch_size * self.world
        self.plan = RunPlan(cfg.train.epochs, cfg.train.epoch_unit, self.source.clips_per_epoch() * self.world,
                            self.iters_per_epoch, self.total, cfg.train.batch_size, self.world)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.model = DoRA.from_config(cfg, self.rank).to(self.device).train()
        torch.manual_seed(cfg.train.seed + self.rank)
        if cfg.model.init:  # official DoRA/DINO or exported weights; a resumed checkpoint overrides them
            w = ckpt.backbone_weights(ckpt.load(Path(cfg.model.init)))
            ckpt.load_backbone(self.model.student.backbone, w)
            ckpt.load_backbone(self.model.teacher.backbone, w)
        self.model.distribute([self.device.index] if self.device.type == "cuda" else None, cfg.train.compile)
        self.opt = build_optimizer(cfg.optim.optimizer, self.model.student, cfg.optim.decay_head_gain)
        amp = self.device.type == "cuda" and cfg.train.precision != "fp32"
        dtype = torch.float16 if cfg.train.precision == "fp16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if amp and cfg.train.precision == "fp16" else None
        self.stepper = TrainStep(self.model, self.opt, cfg, self.iters_per_epoch, self.global_batch,
                                 self.device.type, dtype if amp else None, self.scaler)
        self.step, self.resumed = 0, False
        self.bad_clips = BadClips(run, self.rank, cfg.train.max_bad_fraction)
        self._resume(resume)
        t = cfg.train
        self.watch = CollapseWatch(t.collapse_logs, t.collapse_entropy, t.collapse_mass)
        self.knn = None
        if cfg.eval.knn_data and self.rank == 0:  # teacher k-NN during training (dora/eval/online_knn.py)
            from dora.eval import OnlineKnn

            self.knn = OnlineKnn(cfg.eval, self.iters_per_epoch, self.device, cfg.train.precision)

    def _source(self, rank: int, world: int) -> BatchSource | ImageSource:
        if self.images:
            return ImageSource.from_config(self.images, self.cfg, rank, world)
        return BatchSource.from_config(self.shards, self.cfg, rank, world)

    def _resume(self, resume: str) -> None:
        path = None
        if resume == "auto":
            path = ckpt.latest(self.run)
        elif resume not in ("none", ""):
            path = Path(resume)
        elif ckpt.latest(self.run) is not None:
            raise InputError(f"{self.run}: already holds checkpoints; use --resume auto to continue it, "
                             "or another --output")
        if path is None:
            return
        state = ckpt.load(path)
        _check_same(state["config"], self.cfg, path)
        if state["world"] != self.world:
            raise InputError(f"{path}: made with {state['world']} processes, this run has {self.world}; "
                             "resume with the same number of GPUs")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.bad_clips.bad, self.bad_clips.seen = state["step"], state["bad"], state["seen"]
        self.resumed = True
        set_rng_state(self.model.generator, state["rng"][self.rank])

    def _state(self) -> dict:
        rng = gather(rng_state(self.model.generator), self.world)
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None, "rng": rng, "bad": self.bad_clips.bad,
                "seen": self.bad_clips.seen, "config": self.cfg.to_dict(), "shards": self.names, "images": self.images,
                "world": self.world, "next_batch": self.step, "iters_per_epoch": self.iters_per_epoch}

    def _save(self) -> Path | None:
        state = self._state()  # every rank joins the RNG gather
        t = self.cfg.train
        return ckpt.save_step(self.run, self.step, state, t.keep_checkpoints, t.keep_every) if self.rank == 0 else None

    def _tracking_sheets(self) -> TrackingSheets | None:
        """Rank 0 draws the first clip of batch 0 (its stream), un-augmented, with the tracked objects."""
        if self.rank != 0 or self.cfg.dora.method != "dora":
            return None
        return TrackingSheets.of_batch(self.model, self._source(0, 1)(0), self.cfg, self.run / "maps", self.device)

    def fit(self, quiet: bool = False) -> dict:
        cfg = self.cfg
        if self.device.type == "cpu" and self.step < self.total and cfg.train.memory_check:
            check_memory(cfg, self.model.student.backbone)  # before the kernel kills a run that cannot fit
        if self.rank == 0:
            self.run.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.run / "config.yaml", yaml.safe_dump(_flat(cfg.to_dict()), sort_keys=True))
        backend = choose_backend(cfg.train.loader)
        loader = Loader(self.source, self.step, self.device, backend, cfg.train.num_workers) \
            if self.step < self.total else None
        fresh = not self.resumed  # step 0 of a new run (an attempt killed before its first checkpoint restarts)
        monitor = Monitor(self.run, self.step, self.total, self.global_batch, enabled=self.rank == 0, bar=not quiet,
                          fresh=fresh)
        sheets = self._tracking_sheets()
        if self.step == 0 and sheets is not None:
            sheets.draw(self.step, monitor)
        self._say(self.plan.describe())
        if self.device.type == "cpu" and self.step < self.total and self.rank == 0:
            m = self.model
            self._say(cpu_notice(self.plan, probe_clip_seconds(m.student.backbone, m.teacher.backbone, cfg),
                                 cfg.train.precision))
        if fresh and self.knn is not None:  # the random init: where the k-NN curve starts
            self.knn.log(monitor, 0, self.knn.evaluate(self.model.teacher.backbone))
        if fresh and (self.total == 0 or cfg.train.keep_every > 0):  # train.epochs=0, or a milestone
            self._save()
        last_loss = None
        timer = StepTimer(self.plan, cfg.train.batch_size, self.total, self._say)
        try:
            while self.step < self.total:
                t0 = time.perf_counter()
                batch = next(loader)
                t_data = time.perf_counter() - t0
                self.bad_clips.add(self.step, len(batch.positions), batch.bad, batch.errors)
                log = (self.step + 1) % cfg.train.log_every == 0 or self.step + 1 == self.total
                out = self.train_one_step(batch, log)
                last_loss = out["loss"]
                self.step += 1
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                timer.tick(self.step)
                monitor.step(self.step, out, time.perf_counter() - t0, t_data, log)
                if self.knn is not None and self.knn.due(self.step, self.total):
                    self.knn.log(monitor, self.step, self.knn.evaluate(self.model.teacher.backbone))
                keep_every = cfg.train.keep_every
                if (self.step % cfg.train.checkpoint_every == 0 or self.step == self.total
                        or (keep_every > 0 and self.step % keep_every == 0)):
                    self._save()
                if sheets is not None and (self.step % cfg.train.maps_every == 0 or self.step == self.total):
                    sheets.draw(self.step, monitor)
        finally:
            monitor.close()
        return {"steps": self.step, "loss": last_loss, "bad_clips": self.bad_clips.bad, "backend": backend,
                "run": str(self.run), "checkpoint": str(ckpt.latest(self.run))}

    def _say(self, line: str) -> None:
        if self.rank == 0:
            print(f"dora-train: {line}", file=sys.stderr, flush=True)

    def train_one_step(self, batch, log: bool = True) -> dict:
        """One optimisation step (dora/train/step.py) on a loaded batch, and the values it logs: the loss
        always; on a logging step (`log`) also its per-term parts, the map statistics, the health
        statistics (dora/train/health.py) and the collapse watch's flag (warned about once per episode)."""
        try:
            with self.model.monitoring(log):
                res = self.stepper(self.step, batch.globals_, batch.locals_)
        except TrainingDiverged as e:
            last = ckpt.latest(self.run)
            raise TrainingDiverged(f"{e}. Last good checkpoint: {last or 'none yet'}. Lower optim.lr, "
                                   "or use train.precision=fp32") from None
        out, sv = res.out, res.values
        values = {"loss": out["loss"].detach()}
        if log:
            values.update({k: out[k].detach() for k in ("loss_global", "loss_local") if k in out})
            values.update(statistics(out["monitor"], out["pair_ce"], self.model.centering.center))
            if "maps" in out:
                values["map_entropy"] = map_entropy(out["maps"])
                values["mask_coverage"] = mask_coverage(out["maps"])
        if dist.is_initialized():
            vec = torch.stack([v.float() for v in values.values()])
            dist.all_reduce(vec)
            values = dict(zip(values, vec / self.world, strict=True))
        result = {k: float(v) for k, v in values.items()}
        result.update(lr=sv.lr, weight_decay=sv.weight_decay, momentum=sv.momentum, teacher_temp=sv.teacher_temp,
                      grad_norm=res.grad_norm, bad_clips=self.bad_clips.bad,
                      epoch=(self.step + 1) / self.iters_per_epoch, clips_seen=(self.step + 1) * self.global_batch)
        if log:
            verdict = self.watch.update(result["teacher_entropy"], result["teacher_top_mass"])
            result.update(collapse=verdict.collapse, collapse_kind=verdict.kind)
            if verdict.started:
                self._say(verdict.message())
        return result
