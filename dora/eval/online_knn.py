"""k-NN top-1 of the teacher during pretraining (`eval.knn_data=ROOT eval.every_epochs=N`).

At step 0 of a new run (the random init: where the curve starts; the trainer calls it before the first
step, not on a resume), every N epochs and after the last step, rank 0 extracts the teacher
backbone's [CLS] features of a small labelled folder (ROOT/train, ROOT/val; the DINO evaluation
transform at `eval.knn_crop`), keeps the feature bank on the training device and runs the weighted
k-NN of dora.eval.knn. The result goes to metrics.jsonl (a record with "step", "epoch", "knn_top1",
"knn_top5") and TensorBoard (eval/...).
It draws no random numbers from the training RNGs, so it does not change the run it watches, and it
runs before the step's checkpoint, so a resumed run logs each evaluation once.
"""

from __future__ import annotations

import json
import time

import torch

from dora.config import EvalCfg
from dora.eval.features import cls_feature, extract
from dora.eval.images import choose_decoder, eval_batches, load_layout
from dora.eval.knn import knn_classify, normalize


class OnlineKnn:
    def __init__(self, e: EvalCfg, iters_per_epoch: int, device: torch.device, precision: str = "fp32"):
        self.cfg, self.device = e, device
        self.train, self.val = load_layout(e.knn_data)  # layout errors surface before training starts
        self.every = max(1, round(e.every_epochs * iters_per_epoch))
        self.iters_per_epoch = iters_per_epoch
        self.decoder = choose_decoder("auto")
        self.precision = precision if device.type == "cuda" else "fp32"

    def due(self, step: int, total: int) -> bool:
        return step % self.every == 0 or step == total

    @torch.no_grad()
    def evaluate(self, backbone: torch.nn.Module) -> dict[str, float]:
        """k-NN top-1/top-5 (%) of `backbone`'s [CLS] features on the labelled folder."""
        e = self.cfg
        was_training = backbone.training
        backbone.eval()
        t0 = time.perf_counter()
        try:
            feats = []
            for split in (self.train, self.val):
                batches = eval_batches(split, self.decoder, e.knn_batch_size, 0, self.device,
                                       round(e.knn_crop * 256 / 224), e.knn_crop)
                f, _ = extract(lambda x: cls_feature(backbone, x), batches, len(split), int(backbone.embed_dim),
                               self.device, "", self.precision, quiet=True)
                feats.append(normalize(f))
        finally:
            backbone.train(was_training)
        top1, top5 = knn_classify(feats[0], torch.from_numpy(self.train.labels), feats[1],
                                  torch.from_numpy(self.val.labels), e.knn_k, e.knn_temperature,
                                  len(self.train.classes))
        return {"knn_top1": top1, "knn_top5": top5, "knn_s": round(time.perf_counter() - t0, 3)}

    def log(self, monitor, step: int, values: dict[str, float]) -> None:
        """One metrics.jsonl record and TensorBoard scalars (rank 0's Monitor)."""
        if not monitor.enabled:
            return
        record = {"step": step, "epoch": step / self.iters_per_epoch, **values}
        with open(monitor.metrics, "a") as f:
            f.write(json.dumps(record) + "\n")
        if monitor.tb is not None:
            for k, v in values.items():
                monitor.tb.add_scalar(f"eval/{k}", v, step)
            monitor.tb.flush()
