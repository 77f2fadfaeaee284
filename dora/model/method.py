"""DoRA (and the DINO baseline) as one module: student, EMA teacher, tracker, masks and losses.

`DoRA.forward(globals, locals, teacher_temp)` computes the loss of a batch of clips:
  globals [B, T, V, 3, H, W]: V global views of each of the T frames (V = 2 paper, 1 official)
  locals  [B, T, m, 3, h, w]: m local crops of each frame
The trainer owns optimisation; `ema_update` moves the teacher after each step. Inside
`with model.monitoring():` the outputs also hold `monitor`, the detached tensors the trainer's health
statistics need (dora/train/health.py); other steps compute nothing for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from dora.config import Config, DoRACfg, LossCfg, ModelCfg
from dora.model import tracker
from dora.model.head import DINOHead
from dora.model.losses import Centering, dino_loss, dora_loss
from dora.model.vit import QKTap, create_backbone, num_heads, patch_size


class Embedder(nn.Module):
    """Backbone + DINO head; `forward` returns head logits of the [CLS] token and all tokens."""

    def __init__(self, m: ModelCfg, drop_path: float):
        super().__init__()
        self.backbone = create_backbone(m, drop_path)
        self.head = DINOHead(self.backbone.num_features, m.out_dim, m.hidden_dim, m.bottleneck_dim, m.norm_last_layer)

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor]:
        """A tensor -> (logits, tokens). A list of tensors (one per resolution) -> their logits, in one
        call: DDP then sees a single forward per step, as with DINO's multi-crop wrapper."""
        if isinstance(x, list):
            return [self.head(self.backbone(xi)) for xi in x]
        toks = self.backbone.forward_features(x)
        return self.head(self.backbone.forward_head(toks, pre_logits=True)), toks


class DoRA(nn.Module):
    """Student and EMA teacher (backbone + head), the tracker of the teacher's last block, and the loss.

    Built from three config sections: `model` (backbone and head), `dora` (tracking, masks, method)
    and `loss` (temperatures, centring); `seed` and `rank` seed the per-step head choice.
    """

    def __init__(self, model: ModelCfg, dora: DoRACfg, loss: LossCfg, seed: int = 0, rank: int = 0):
        super().__init__()
        self.dora, self.student_temp, self.seed, self.rank = dora, loss.student_temp, seed, rank
        self.student = Embedder(model, model.drop_path)
        self.teacher = Embedder(model, 0.0)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.tap = QKTap(self.teacher.backbone)
        self.centering = Centering(model.out_dim, loss.center_momentum)
        self.patch = patch_size(self.student.backbone)
        self.prefix = int(getattr(self.student.backbone, "num_prefix_tokens", 1))
        if dora.method == "dora" and dora.num_objects > num_heads(self.teacher.backbone):
            raise ValueError(f"dora.num_objects={dora.num_objects} exceeds the {num_heads(self.teacher.backbone)} "
                             "heads of the last block; set model.last_block_heads (appendix B.2)")
        self.generator = torch.Generator().manual_seed(seed)
        self._run_student: list[nn.Module] = [self.student]  # what forward runs; a list: not a submodule
        self.monitor = False  # forward also returns out["monitor"] (see `monitoring`)

    @contextlib.contextmanager
    def monitoring(self, on: bool = True) -> Iterator[DoRA]:
        """Within the block (if `on`), every forward also returns out["monitor"]: detached
        teacher_probs [B, T, V, K] (centred, sharpened: what the loss uses), teacher_logits [B, T, V, K],
        student_logits [N, K] (the student's outputs on the global views it compares with the teacher:
        the masked views for DoRA), teacher_cls [B*T*V, D] (teacher backbone [CLS] features of the
        global views) and mask_coverage_student (mean of the masks multiplied into the student's views;
        1 for DINO). A flag rather than an argument: the training step calls forward unchanged."""
        saved, self.monitor = self.monitor, on
        try:
            yield self
        finally:
            self.monitor = saved

    @classmethod
    def from_config(cls, cfg: Config, rank: int = 0) -> DoRA:
        """The method of a whole run configuration (its model, dora and loss sections, train.seed)."""
        return cls(cfg.model, cfg.dora, cfg.loss, cfg.train.seed, rank)

    def distribute(self, device_ids: list[int] | None = None, compile: bool = False) -> DoRA:
        """Run the student wrapped in DistributedDataParallel (an initialised process group) and/or
        torch.compile from now on; parameters and state_dict keys stay those of `self.student`."""
        run = self.student
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            run = nn.parallel.DistributedDataParallel(run, device_ids=device_ids)
        if compile:
            run = torch.compile(run)
        self._run_student = [run]
        return self

    def train(self, mode: bool = True) -> DoRA:
        super().train(mode)
        self.teacher.eval()  # the teacher never drops paths and never trains
        return self

    @torch.no_grad()
    def ema_update(self, momentum: float) -> None:
        """theta' <- m theta' + (1 - m) theta for parameters; buffers are copied."""
        for pt, ps in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
            pt.lerp_(ps.detach(), 1.0 - momentum)
        for bt, bs in zip(self.teacher.buffers(), self.student.buffers(), strict=True):
            bt.copy_(bs)

    @torch.no_grad()
    def track_objects(self, globals_: torch.Tensor, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher pass over all global views; returns (teacher logits [B, T, V, K], tracked maps
        [B, T, V, k, n] (eq. 6, or eq. 3 without SK, or random blocks), the chosen heads).
        Heads and random blocks come from `generator` (default: self.generator)."""
        return self._track(globals_, generator)[:3]

    @torch.no_grad()
    def _track(self, globals_: torch.Tensor, generator: torch.Generator | None = None, want_cls: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """`track_objects`, plus the teacher backbone's [CLS] features [B*T*V, D] if `want_cls` (else None)."""
        gen = generator or self.generator
        b, t, v = globals_.shape[:3]
        d = self.dora
        with self.tap:
            logits, toks = self.teacher(globals_.flatten(0, 2))
        logits = logits.reshape(b, t, v, -1)
        cls = self.teacher.backbone.forward_head(toks, pre_logits=True).detach() if want_cls else None
        if d.method != "dora":
            return logits, None, None, cls
        n = toks.shape[1] - self.prefix
        grid = (globals_.shape[-2] // self.patch, globals_.shape[-1] // self.patch)
        heads = tracker.choose_heads(num_heads(self.teacher.backbone), d.num_objects, gen)
        if d.mask_source == "random":  # Table 2c: iBOT's masks (10-50 % hidden), or blocks kept (dora.random_mask)
            draw = tracker.ibot_block_maps if d.random_mask == "ibot" else tracker.random_block_maps
            maps = draw((b, t, v * d.num_objects), grid, gen)
            return logits, maps.reshape(b, t, v, d.num_objects, n).to(globals_.device), heads, cls
        first = lambda x: x.reshape(b, t, v, *x.shape[1:])[:, 0].flatten(0, 1)  # noqa: E731 (t0 of each view)
        if d.mask_source == "random_prototypes":  # Table 2c's random rows: random blocks replace A_I in eq. 2
            blocks = tracker.random_block_maps((b * v, 1, d.num_objects), grid, gen).reshape(b * v, d.num_objects, n)
            cls_attn = (blocks / blocks.sum(-1, keepdim=True)).to(toks.device)
        else:
            cls_attn = first(self.tap.cls_attention(heads.to(toks.device)))
        queries = first(self.tap.patch_queries())
        if d.sinkhorn:
            protos = tracker.discover(cls_attn, queries, first(toks[:, self.prefix:]), d.sk_eps, d.sk_iters,
                                      d.sk_scale, d.normalize_tokens)
        else:
            protos = tracker.pool_prototypes(cls_attn, queries).float()
        keys = self.tap.patch_keys().reshape(b, t, v, n, -1).transpose(1, 2).flatten(0, 1)  # [B*V, T, n, d]
        maps = tracker.track(protos, keys)  # [B*V, T, k, n]
        return logits, maps.reshape(b, v, t, d.num_objects, n).transpose(1, 2), heads, cls

    def forward(self, globals_: torch.Tensor, locals_: torch.Tensor, teacher_temp: float,
                step: int | None = None) -> dict[str, torch.Tensor]:
        """Loss of a batch of clips (eq. 10 for DoRA, per-frame multi-crop DINO for the baseline).

        The student runs as `distribute` wrapped it (DistributedDataParallel, torch.compile), if it did.
        `step`: the training iteration; heads are then drawn from (train.seed, rank, step).
        """
        student = self._run_student[0]
        b, t, v = globals_.shape[:3]
        m = locals_.shape[2]
        d, temp = self.dora, self.student_temp
        gen = None if step is None else tracker.step_generator(self.seed, self.rank, step)
        t_logits, maps, heads, cls = self._track(globals_, gen, want_cls=self.monitor)
        probs = self.centering.probs(t_logits, teacher_temp)
        coverage = None
        if d.method == "dora":
            k = d.num_objects
            grid = (globals_.shape[-2] // self.patch, globals_.shape[-1] // self.patch)
            # [B, T*V, k, n]: the binary threshold is a mean over batch x patches per frame, view and object
            masks = tracker.object_masks(maps.flatten(1, 2), grid, tuple(globals_.shape[-2:]), d.mask)
            masks = masks.reshape(b, t, v, k, 1, *globals_.shape[-2:]).to(globals_.dtype)
            views = (globals_[:, :, :, None] * masks).flatten(0, 3)  # eq. 7: X^{v,o_i}_t
            if self.monitor:
                coverage = masks.mean(dtype=torch.float32).detach()
        else:
            views = globals_.flatten(0, 2)
        s_views, s_local = student([views, locals_.flatten(0, 2)]) if m else (student([views])[0], None)
        s_local = s_local.reshape(b, t, m, -1) if m else probs.new_zeros(b, t, 0, probs.shape[-1])
        if d.method == "dora":
            out = dora_loss(probs, s_views.reshape(b, t, v, d.num_objects, -1), s_local, temp, cross_view=v > 1,
                            official_quirks=d.official_quirks)
            out["maps"] = maps.detach()
            out["heads"] = heads
        else:
            out = dino_loss(probs, s_views.reshape(b, t, v, -1), s_local, temp)
        if self.monitor:
            out["monitor"] = {"teacher_probs": probs.detach(), "teacher_logits": t_logits.detach(),
                              "student_logits": s_views.detach(), "teacher_cls": cls,
                              "mask_coverage_student": probs.new_ones(()) if coverage is None else coverage}
        self.centering.update(t_logits)
        return out

