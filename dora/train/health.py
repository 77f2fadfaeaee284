"""Is training learning? Health statistics of a step's outputs, and the collapse watch.

Pure tensor functions (each one a formula, tested on constructed tensors) and `CollapseWatch`, which
counts consecutive logs on which the teacher looks collapsed. The trainer computes them on logging
steps only, from `DoRA.forward`'s `monitor` outputs (`DoRA.monitoring`). All in nats or unit-free:

- teacher_entropy: mean over teacher rows of H(p_t) / ln K, p_t the centred, sharpened teacher
  softmax the loss uses: 1 = uniform (collapse by flattening), 0 = one-hot rows;
- teacher_top_mass: the largest entry of the batch-mean teacher distribution (the global batch:
  all ranks): 1 = every row on the same prototype (collapse to one prototype), small for a batch
  spread over the prototypes (frames and views of a clip share theirs, so about 1/clips at best);
- kl_teacher_student: KL(p_t || p_s) averaged over the loss's (teacher, student) pairs = the mean
  cross-entropy over those pairs minus the mean H(p_t) (each teacher row enters the same number of
  pairs, in DoRA and DINO alike);
- center_norm: ||c||_2 of DINO's centre;
- student_std, teacher_std: the std across the batch of each dimension of the L2-normalised head
  outputs, averaged over dimensions, times sqrt(K): about 1 for outputs spread over the sphere, 0
  when every sample gives the same output;
- effective_rank: exp(entropy of the normalised singular values) of the centred batch of teacher
  backbone [CLS] features (Roy & Vetterli 2007): 1 to min(N - 1, D); 0 for a constant batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

UNIFORM = "uniform"
ONE_PROTOTYPE = "one_prototype"


def entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) = -sum p log p over the last dim (0 log 0 = 0), in nats."""
    p = p.float()
    return -torch.special.xlogy(p, p).sum(-1)


def teacher_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean over rows of H(p_t) / ln K; probs [..., K]."""
    return entropy(probs).mean() / math.log(probs.shape[-1])


def teacher_top_mass(probs: torch.Tensor) -> torch.Tensor:
    """max_k of the batch-mean teacher distribution (rows of probs [..., K] averaged; over every rank's
    rows when torch.distributed is initialised)."""
    mean = probs.float().reshape(-1, probs.shape[-1]).mean(0)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(mean)
        mean = mean / dist.get_world_size()
    return mean.max()


def kl_teacher_student(pair_ce: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) in nats, mean over the loss's pairs: mean pair cross-entropy `pair_ce`
    minus the mean teacher entropy (valid when every teacher row of probs [..., K] is in as many
    pairs as the others, as in DoRA's and DINO's losses)."""
    return pair_ce.float() - entropy(probs).mean()


def output_std(logits: torch.Tensor) -> torch.Tensor:
    """sqrt(K) x mean over dimensions of the std across rows (population std) of the L2-normalised
    rows of logits [..., K]."""
    k = logits.shape[-1]
    x = F.normalize(logits.float().reshape(-1, k), dim=-1)
    return x.std(0, correction=0).mean() * math.sqrt(k)


def effective_rank(features: torch.Tensor, rtol: float = 1e-5) -> torch.Tensor:
    """exp(H(s / sum s)) of the singular values s of the centred rows of features [N, D]; singular values
    below rtol x ||features||_F count as zero (a constant batch: 0)."""
    x = features.float().reshape(-1, features.shape[-1])
    s = torch.linalg.svdvals(x - x.mean(0, keepdim=True))
    s = torch.where(s > rtol * x.norm(), s, torch.zeros_like(s))
    total = s.sum()
    return torch.where(total > 0, torch.exp(entropy(s / total.clamp_min(1e-30))), torch.zeros_like(total))


def statistics(monitor: dict[str, torch.Tensor], pair_ce: torch.Tensor,
               center: torch.Tensor) -> dict[str, torch.Tensor]:
    """The health values of one step from `DoRA.forward`'s out["monitor"], out["pair_ce"] and the centre."""
    probs = monitor["teacher_probs"]
    return {
        "teacher_entropy": teacher_entropy(probs),
        "teacher_top_mass": teacher_top_mass(probs),
        "kl_teacher_student": kl_teacher_student(pair_ce, probs),
        "center_norm": center.float().norm(),
        "student_std": output_std(monitor["student_logits"]),
        "teacher_std": output_std(monitor["teacher_logits"]),
        "effective_rank": effective_rank(monitor["teacher_cls"]),
        "mask_coverage_student": monitor["mask_coverage_student"].float(),
    }


@dataclass(frozen=True)
class Verdict:
    """What the watch says after one log: `collapse` is set once a condition has held for `logs` logs in
    a row, `kind` names it (uniform | one_prototype | None), `started` is true on the log it first
    fires (the trainer warns then), `value` is the statistic that fired."""

    collapse: bool
    kind: str | None
    started: bool
    value: float
    logs: int

    def message(self) -> str:
        """The one-line warning."""
        what = (f"near-uniform (entropy {self.value:.2f} ln K)" if self.kind == UNIFORM
                else f"on one prototype ({self.value:.2f} of the batch-mean mass)")
        return (f"warning: the teacher has been {what} for {self.logs} logs in a row: collapse; "
                "see README 'Is it learning?'")


class CollapseWatch:
    """Counts consecutive logs with teacher_entropy > `entropy` (near-uniform) and, separately, with
    teacher_top_mass > `mass` (one prototype); a condition fires when its count reaches `logs`, and
    clears on the first log without it. A resumed run starts counting afresh."""

    def __init__(self, logs: int = 3, entropy: float = 0.95, mass: float = 0.9):
        self.logs, self.entropy, self.mass = logs, entropy, mass
        self.counts = {UNIFORM: 0, ONE_PROTOTYPE: 0}
        self.firing: str | None = None

    def update(self, teacher_entropy: float, teacher_top_mass: float) -> Verdict:
        """Take one log's values; return the verdict."""
        values = {UNIFORM: teacher_entropy, ONE_PROTOTYPE: teacher_top_mass}
        over = {UNIFORM: teacher_entropy > self.entropy, ONE_PROTOTYPE: teacher_top_mass > self.mass}
        for kind in self.counts:
            self.counts[kind] = self.counts[kind] + 1 if over[kind] else 0
        kind = next((k for k in (ONE_PROTOTYPE, UNIFORM) if self.counts[k] >= self.logs), None)
        started = kind is not None and kind != self.firing
        self.firing = kind
        return Verdict(kind is not None, kind, started, float(values[kind]) if kind else float("nan"),
                       self.counts[kind] if kind else 0)
