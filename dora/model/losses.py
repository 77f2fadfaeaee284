"""DINO-style distillation losses of DoRA (eqs. 8-10) and of the DINO baseline.

Notation: teacher probabilities are centred and sharpened softmaxes of the teacher head's output
([CLS] token), student log-probabilities are log-softmaxes at the student temperature. Every loss
here is a mean over clips and over the terms it sums (as DINO averages its crop pairs); per-frame
values are returned so eq. 10's mean over frames is explicit.

Besides the optimised `loss`, `dora_loss` and `dino_loss` return the same monitoring terms on one
scale (nats, comparable with ln K): `loss_global` (eq. 8 / DINO's global-global pairs) and
`loss_local` (eq. 9 / DINO's global-local pairs), each the mean cross-entropy per (teacher, student)
pair of that term, and `pair_ce`, the mean over all the pairs of the loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def cross_entropy(teacher_probs: torch.Tensor, student_logits: torch.Tensor, student_temp: float) -> torch.Tensor:
    """-sum_K p_teacher * log softmax(student / temp), over the last dim (no reduction elsewhere)."""
    return -(teacher_probs * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(-1)


class Centering(nn.Module):
    """DINO's teacher centring: an EMA of the mean teacher output, all-reduced across ranks when
    torch.distributed is initialised (so it also runs in a single CPU process)."""

    def __init__(self, out_dim: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def probs(self, teacher_logits: torch.Tensor, temp: float) -> torch.Tensor:
        """softmax((t - c) / temp): the sharpened, centred teacher distribution."""
        return F.softmax((teacher_logits.float() - self.center) / temp, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        flat = teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1])
        total = flat.sum(0, keepdim=True)
        count = torch.tensor([flat.shape[0]], dtype=torch.float32, device=flat.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(count)
        self.center.mul_(self.momentum).add_(total / count, alpha=1 - self.momentum)


def multi_object_loss(teacher_probs: torch.Tensor, student_masked: torch.Tensor, student_temp: float,
                      cross_view: bool = True) -> torch.Tensor:
    """Eq. 8 per frame -> [T].

    teacher_probs [B, T, V, K]: teacher on the unmasked global views X^u_t.
    student_masked [B, T, V, k, K]: student on X^{v,o_i}_t, view v masked with object i.
    cross_view: pairs u != v (paper); False pairs each view with its own masked copies (official,
    which has a single view). Mean over clips, pairs and objects.
    """
    v = teacher_probs.shape[2]
    terms = []
    for u in range(v):
        for w in range(v):
            if cross_view and u == w:
                continue
            if not cross_view and u != w:
                continue
            terms.append(cross_entropy(teacher_probs[:, :, u, None], student_masked[:, :, w], student_temp))
    return torch.stack(terms).mean(dim=(0, 1, 3))  # pairs, clips, objects


def local_loss(teacher_probs: torch.Tensor, student_local: torch.Tensor, student_temp: float,
               skip_first_crop: bool = False) -> torch.Tensor:
    """Eq. 9 per frame -> [T]: every teacher global view against every student local crop.

    teacher_probs [B, T, V, K]; student_local [B, T, m, K]. skip_first_crop reproduces the official
    code's accident (it drops local crop 0); only the `official_quirks` switch uses it.
    """
    s = student_local[:, :, 1:] if skip_first_crop else student_local
    ce = cross_entropy(teacher_probs[:, :, :, None], s[:, :, None], student_temp)  # [B, T, V, m]
    return ce.mean(dim=(0, 2, 3))


def dora_loss(teacher_probs: torch.Tensor, student_masked: torch.Tensor, student_local: torch.Tensor,
              student_temp: float, cross_view: bool = True, official_quirks: bool = False) -> dict[str, torch.Tensor]:
    """Eq. 10: L = mean over frames of (L^O_t + L^LC_t). Returns the total and both parts.

    official_quirks reproduces the official code's arithmetic: local crop 0 unused, the frame loss
    is (L^O + L^LC)/2, and its accumulator is not reset between objects: it is divided by T after
    each object and added to the total, so object i's term (L^O_i + L^LC)/2, averaged over frames,
    enters with weight `official_object_weights(k, T)[i]` = (1/k) sum_{j=0}^{k-1-i} T^-j
    (k = 3, T = 8: 73/192, 72/192, 64/192; (k - i)/k only when T = 1).
    """
    v, k, m = teacher_probs.shape[2], student_masked.shape[3], student_local.shape[2]
    if not official_quirks:
        obj = multi_object_loss(teacher_probs, student_masked, student_temp, cross_view)
        loc = local_loss(teacher_probs, student_local, student_temp)
        out = {"loss": (obj + loc).mean(), "object": obj.mean(), "local": loc.mean()}
        return _with_terms(out, (v * (v - 1) if cross_view else v) * k, v * m)
    loc = local_loss(teacher_probs, student_local, student_temp, skip_first_crop=True).mean()
    total, frame_loss = 0.0, 0.0
    per_obj = []
    for i in range(k):
        obj_i = multi_object_loss(teacher_probs, student_masked[:, :, :, i:i + 1], student_temp, cross_view)
        per_obj.append(obj_i.mean())
        frame_loss = frame_loss + ((obj_i + loc) * 0.5).sum()
        frame_loss = frame_loss / obj_i.shape[0]
        total = total + frame_loss
    out = {"loss": total / k, "object": torch.stack(per_obj).mean(), "local": loc}
    return _with_terms(out, (v * (v - 1) if cross_view else v) * k, v * max(0, m - 1))


def _with_terms(out: dict[str, torch.Tensor], n_object: int, n_local: int) -> dict[str, torch.Tensor]:
    """Add the monitoring terms to DoRA's outputs: `loss_global` = eq. 8's and `loss_local` = eq. 9's
    mean CE per pair (the `object` and `local` values), and `pair_ce`, their mean weighted by the
    n_object and n_local pairs each frame of a clip contributes (detached: for logging only)."""
    glob, loc = out["object"].detach(), out["local"].detach()
    pair_ce = (n_object * glob + n_local * loc) / max(1, n_object + n_local) if n_local else glob
    return {**out, "loss_global": glob, "loss_local": loc, "pair_ce": pair_ce}


def official_object_weights(k: int, t: int) -> list[float]:
    """Weight of object i's frame-averaged term in the official DoRA loss (k objects, T frames).

    The official loop keeps one accumulator a over objects: a <- (a + sum_t f_i,t) / T, total += a,
    then total / k. Unrolled, object i counts in the totals of objects i..k-1, divided by T once
    more for each later object: w_i = (1/k) sum_{j=0}^{k-1-i} T^-j.
    """
    return [sum(t ** -j for j in range(k - i)) / k for i in range(k)]


def dino_loss(teacher_probs: torch.Tensor, student_global: torch.Tensor, student_local: torch.Tensor,
              student_temp: float) -> dict[str, torch.Tensor]:
    """The DINO baseline on the same clips, per frame: teacher global u vs student global v != u and
    vs every student local crop, averaged over those pairs, then over frames.

    teacher_probs, student_global [B, T, V, K]; student_local [B, T, m, K]. Besides `loss`: the
    monitoring terms `loss_global` (the V(V-1) global pairs; absent with one view), `loss_local` (the
    V m local pairs; absent without local crops) and `pair_ce` (= loss); `object` and `local` are the
    same two terms under DoRA's names.
    """
    v = teacher_probs.shape[2]
    terms = [cross_entropy(teacher_probs[:, :, u], student_global[:, :, w], student_temp)
             for u in range(v) for w in range(v) if u != w]
    n_global = len(terms)
    terms += [cross_entropy(teacher_probs[:, :, u], student_local[:, :, j], student_temp)
              for u in range(v) for j in range(student_local.shape[2])]
    stacked = torch.stack(terms)
    per_frame = stacked.mean(dim=(0, 1))
    out = {"loss": per_frame.mean(), "pair_ce": per_frame.mean().detach()}
    with torch.no_grad():
        if n_global:
            out["loss_global"] = out["object"] = stacked[:n_global].mean()
        if len(terms) > n_global:
            out["loss_local"] = out["local"] = stacked[n_global:].mean()
    return out
