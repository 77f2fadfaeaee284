"""Linear probe on frozen features (DINO's eval_linear.py protocol), single process, exact resume.

Feature: [CLS] of the last n = 4 blocks after the final norm, concatenated (features.last_blocks_feature).
Classifier: nn.Linear, weights N(0, 0.01), bias 0. SGD, momentum 0.9, weight decay 0, lr = lr_ref x batch / 256,
cosine to 0 over the epochs, stepped per epoch (CosineAnnealingLR(T_max=epochs, eta_min=0)). Training
images: RandomResizedCrop(224) + horizontal flip (as DINO; boxes drawn with torchvision's algorithm, decoded
by DALI (dora/eval/train_views.py) or torchvision); validation: Resize 256 bicubic +
CenterCrop 224 (DALI or torchvision, extracted once: the encoder is frozen, so every epoch sees the same
validation features). Reported: top-1 of every epoch, the best over epochs (what DINO and the paper
report) and the last one.

Resume: OUT/checkpoint.pth (atomic) after each epoch holds the classifier, the optimizer, the history and
the protocol it was made with: the checkpoint's sha256 (its content, not its path), how the encoder was
built, and every setting that changes the numbers. A rerun resumes only when all of them match; otherwise
it stops with one line naming what differs, or starts again with `restart`. Epoch e draws its order from
seed (seed, e) and image i's view from (seed, e, i) only (TrainViews), so the workers may change, and a run
killed at any moment and started again gives the same per-epoch numbers as one that was never stopped.
`cached`: features of the un-augmented training images extracted once (a deviation, recorded).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dora.checkpoint import save_atomic
from dora.eval.features import autocast, extract, feature_dim, last_blocks_feature
from dora.eval.images import Split, TrainViews, eval_batches, load_layout, one_class_note, torch_batches
from pipeline.errors import InputError
from pipeline.files import save_image_atomic, write_text_atomic

CACHED_DEVIATION = ("cached-features: the linear layer is trained on features of the un-augmented training "
                    "images (Resize + CenterCrop), extracted once; DINO trains on RandomResizedCrop + flip")
FREE = {"workers"}  # may change between a run and its resumption (no number depends on them)
OUTPUTS = ("checkpoint.pth", "metrics.jsonl", "metrics.json", "linear_curve.png", "features_train.pth",
           "features_val.pth")  # what --restart removes


@dataclass
class LinearParams:
    epochs: int = 100
    lr: float = 0.001  # at batch 256
    batch_size: int = 1024  # DINO: 128 per GPU x 8 GPUs
    n_last_blocks: int = 4
    avgpool: bool = False
    cached: bool = False
    seed: int = 0
    workers: int = 4
    decoder: str = "torch"
    precision: str = "fp32"
    resize: int = 256
    crop: int = 224


def linear_classifier(dim: int, num_classes: int, seed: int) -> nn.Linear:
    """DINO's LinearClassifier: N(0, 0.01) weights, zero bias."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(dim, num_classes)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.01, generator=g)
        layer.bias.zero_()
    return layer


def epoch_lr(base: float, epoch: int, epochs: int) -> float:
    """CosineAnnealingLR(T_max=epochs, eta_min=0) in closed form: the lr used during `epoch`."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


@torch.no_grad()
def accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """top-1 (and top-5 when there are at least 5 classes, as DINO) in %, and the mean cross-entropy."""
    n = labels.shape[0]
    out = {"loss": float(F.cross_entropy(logits, labels)),
           "top1": 100.0 * int((logits.argmax(1) == labels).sum()) / n}
    if num_classes >= 5:
        top5 = logits.topk(5, dim=1).indices.eq(labels[:, None]).any(1)
        out["top5"] = 100.0 * int(top5.sum()) / n
    return out


class LinearProbe:
    """One linear-probe run writing OUT/checkpoint.pth, OUT/metrics.jsonl and OUT/linear_curve.png."""

    def __init__(self, encoder, data: Path, out: Path, p: LinearParams, quiet: bool = False, say=print,
                 restart: bool = False):
        self.enc, self.out, self.p, self.quiet, self.say, self.restart = encoder, Path(out), p, quiet, say, restart
        self.train, self.val = load_layout(data)
        self.num_classes = len(self.train.classes)
        self.note = one_class_note(self.num_classes, f"{data}/train")
        if self.note:
            say(f"warning: {self.note}")
        model, n, avg = encoder.model, p.n_last_blocks, p.avgpool
        if not 1 <= n <= encoder.depth:
            raise InputError(f"--n-last-blocks {n}: the encoder has {encoder.depth} blocks")
        self.feature = lambda x: last_blocks_feature(model, x, n, avg)
        self.dim = feature_dim(model, "last_blocks", n, avg)
        self.device = encoder.device
        self.rates: dict[str, float] = {}

    def _features(self, split: Split, name: str) -> torch.Tensor:
        """Un-augmented features of `split`, cached in OUT/features_NAME.pth for resumption."""
        path = self.out / f"features_{name}.pth"
        key = {**self._encoder_key(), "n": len(split),
               **{k: v for k, v in asdict(self.p).items() if k in ("n_last_blocks", "avgpool", "precision",
                                                                   "resize", "crop", "decoder")}}
        if path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=False)
            if saved.get("key") == key:
                return saved["feat"].to(self.device)
        batches = eval_batches(split, self.p.decoder, self.p.batch_size, self.p.workers, self.device,
                               self.p.resize, self.p.crop)
        feat, self.rates[name] = extract(self.feature, batches, len(split), self.dim, self.device,
                                         f"features {name}", self.p.precision, self.quiet)
        save_atomic({"key": key, "feat": feat.cpu()}, path)
        return feat

    def _encoder_key(self) -> dict:
        """What the features depend on besides the settings: the checkpoint's content and how it was built."""
        e = self.enc
        return {"checkpoint_sha256": e.sha256(), "key": e.key, "arch": e.arch, "num_heads": e.num_heads,
                "pos_embed": e.pos_embed}

    def _protocol(self) -> dict:
        return {k: v for k, v in asdict(self.p).items() if k not in FREE} | self._encoder_key() | {
            "num_classes": self.num_classes, "n_train": len(self.train), "n_val": len(self.val)}

    def _resume(self, clf: nn.Linear, opt: torch.optim.Optimizer) -> tuple[int, list[dict]]:
        path = self.out / "checkpoint.pth"
        if not path.exists():
            return 0, []
        state = torch.load(path, map_location="cpu", weights_only=False)
        old, new = state["protocol"], self._protocol()
        if old != new:
            diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            was = "; ".join(f"{k} {_short(old.get(k))} -> {_short(new.get(k))}" for k in diff[:3])
            raise InputError(f"{path}: was made with other options ({', '.join(diff[:5])}): {was}; use the same "
                             "checkpoint and options to resume, --restart to start again, or another --out")
        clf.load_state_dict(state["linear"])
        opt.load_state_dict(state["optimizer"])
        return state["epoch"], state["history"]

    def _train_epoch(self, clf: nn.Linear, opt: torch.optim.Optimizer, epoch: int,
                     cached: torch.Tensor | None) -> float:
        p = self.p
        seed = p.seed * 1_000_003 + epoch
        gen = torch.Generator().manual_seed(seed)
        labels = torch.from_numpy(self.train.labels).to(self.device)
        if cached is not None:
            perm = torch.randperm(len(self.train), generator=gen)
            batches = ((None, perm[i:i + p.batch_size].numpy()) for i in range(0, len(perm), p.batch_size))
        elif p.decoder == "dali":
            from dora.eval.train_views import dali_train_batches

            order = torch.randperm(len(self.train), generator=gen).numpy()
            batches = dali_train_batches(self.train, order, p.batch_size, p.workers, self.device, gen, p.crop)
        else:  # image i's view from (seed, epoch, i): the same whatever the workers
            order = torch.randperm(len(self.train), generator=gen).numpy()
            batches = torch_batches(self.train, p.batch_size, p.workers, None, p.crop, order=order,
                                    dataset=TrainViews(self.train, p.crop, seed), pin=self.device.type == "cuda")
        clf.train()
        losses = []
        n_batches = math.ceil(len(self.train) / p.batch_size)
        bar = tqdm(batches, total=n_batches, desc=f"epoch {epoch}", unit="batch", disable=self.quiet,
                   dynamic_ncols=True)
        for x, idx in bar:
            idx_t = torch.as_tensor(idx, device=self.device)
            if cached is not None:
                feat = cached[idx_t]
            else:
                with torch.no_grad(), autocast(self.device, p.precision):
                    feat = self.feature(x.to(self.device, non_blocking=True)).float()
            loss = F.cross_entropy(clf(feat), labels[idx_t])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        return sum(losses) / len(losses)

    def fit(self) -> dict:
        p = self.p
        self.out.mkdir(parents=True, exist_ok=True)
        if self.restart:  # start again: nothing of an earlier run is reused
            for name in OUTPUTS:
                (self.out / name).unlink(missing_ok=True)
        val_feat = self._features(self.val, "val")
        val_labels = torch.from_numpy(self.val.labels).to(self.device)
        cached = self._features(self.train, "train") if p.cached else None
        clf = linear_classifier(self.dim, self.num_classes, p.seed).to(self.device)
        base_lr = p.lr * p.batch_size / 256.0
        opt = torch.optim.SGD(clf.parameters(), lr=base_lr, momentum=0.9, weight_decay=0.0)
        start, history = self._resume(clf, opt)
        if start:
            self.say(f"resuming after epoch {start - 1} from {self.out / 'checkpoint.pth'}")
        for epoch in range(start, p.epochs):
            lr = epoch_lr(base_lr, epoch, p.epochs)
            for g in opt.param_groups:
                g["lr"] = lr
            train_loss = self._train_epoch(clf, opt, epoch, cached)
            clf.eval()
            with torch.no_grad():
                logits = torch.cat([clf(val_feat[i:i + 4096]) for i in range(0, len(val_feat), 4096)])
            acc = accuracy(logits, val_labels, self.num_classes)
            history.append({"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_loss": acc["loss"],
                            "top1": acc["top1"], **({"top5": acc["top5"]} if "top5" in acc else {})})
            save_atomic({"epoch": epoch + 1, "linear": clf.state_dict(), "optimizer": opt.state_dict(),
                         "history": history, "protocol": self._protocol()}, self.out / "checkpoint.pth")
            write_text_atomic(self.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            if not self.quiet:
                self.say(f"epoch {epoch}: top-1 {acc['top1']:.2f} (best {max(h['top1'] for h in history):.2f})")
        write_text_atomic(self.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        curve(history, self.out / "linear_curve.png")
        best = max(history, key=lambda h: h["top1"])
        last = history[-1]
        res = {"n_train": len(self.train), "n_val": len(self.val), "num_classes": self.num_classes,
               "feature_dim": self.dim, "lr_scaled": base_lr, "epochs_run": len(history),
               "results": {"best_top1": best["top1"], "best_epoch": best["epoch"], "last_top1": last["top1"],
                           **({"last_top5": last["top5"]} if "top5" in last else {})},
               "images_per_s": {k: round(v, 2) for k, v in self.rates.items()}}
        if p.cached:
            res["deviation"] = CACHED_DEVIATION
        if self.note:
            res["note"] = self.note
        return res


def _short(v) -> str:
    """A protocol value for a one-line message (sha256 digests shortened)."""
    return f"{v[:12]}…" if isinstance(v, str) and len(v) == 64 else repr(v)


def curve(history: list[dict], path: Path) -> Path:
    """PNG: validation top-1 and training loss per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(ep, [h["top1"] for h in history], marker="o", ms=3)
    ax[0].set(xlabel="epoch", ylabel="val top-1 (%)", title="linear probe")
    ax[1].plot(ep, [h["train_loss"] for h in history], marker="o", ms=3, color="tab:red")
    ax[1].set(xlabel="epoch", ylabel="train loss")
    fig.tight_layout()
    save_image_atomic(path, fig)
    plt.close(fig)
    return path
