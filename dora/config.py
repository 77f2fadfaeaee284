"""Typed configuration: YAML files in configs/ plus `key=value` overrides, checked against a schema.

Every difference between the paper and the official code has a switch here; docs/DEVIATIONS.md
lists them. Unknown keys, wrong types and values outside a key's choices are rejected with one
line that names the key and what is valid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.errors import InputError


class ConfigError(InputError):
    """A bad config file, key or value (one line for the user)."""


@dataclass
class ModelCfg:
    arch: str = "vit_small_patch16_224"  # any timm ViT
    depth: int | None = None  # overrides of the timm architecture (None: as named)
    embed_dim: int | None = None
    num_heads: int | None = None
    img_size: int | None = None  # image size of the position-embedding grid (None: the arch's); others resample
    drop_path: float = 0.1  # student only
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    norm_last_layer: bool = False
    last_block_heads: int | None = None  # appendix B.2: split the last block's q/k into more heads (k > h)
    init: str | None = None  # start from these backbone weights (our checkpoint, export, or official DoRA/DINO)
    pos_embed_resample: str = "timm"  # timm: antialiased bicubic to the grid | dino: DINO/official (+0.1, no antialias)


@dataclass
class DoRACfg:
    method: str = "dora"  # dora | dino (baseline: same clips, no tracking, no masks)
    num_objects: int = 3  # k
    sinkhorn: bool = True  # eq. 6 (True) or eq. 3 (False)
    sk_iters: int = 30  # not stated in the paper; the official value
    sk_eps: float = 0.05
    sk_scale: str = "assignment"  # assignment: each patch's column sums to 1 | marginal: eq. 4 literally
    normalize_tokens: bool = True  # L2-normalise Z~ before eq. 4/5 (as the official code does)
    mask: str = "binary"  # binary: official threshold at the mean (what the paper's numbers used) | soft: experimental
    mask_source: str = "object"  # object (eq. 7) | random (block-wise masks, no SK/tracking) | random_prototypes
    #   (random blocks replace A_I in eq. 2, then SK or not, tracking and eq. 7: Table 2c's SK x random rows)
    random_mask: str = "ibot"  # mask_source=random: ibot = blocks hide 10-50 % (iBOT) | keep = the student sees 10-50 %
    global_views: int = 2  # paper: 2 views, loss across u != v | official: 1 view, teacher unmasked
    official_quirks: bool = False  # official bugs: local crop 0 unused, per-object loss not reset


@dataclass
class LossCfg:
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 0.0
    teacher_temp_per: str = "epoch"  # epoch: one value per epoch, as DINO and the official code | step: per iteration
    center_momentum: float = 0.9


@dataclass
class DataCfg:
    clip_frames: int = 8  # T
    clip_stride_s: float = 1.0
    clip_within_shot: bool = True  # no clip crosses a shot cut (paper's Table 6b "†") | false: official loader
    precrop_size: int = 300
    precrop_scale: tuple[float, float] = (0.2, 1.0)
    precrop_per_clip: bool = True  # one pre-crop for all frames of a clip
    global_size: int = 224
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_crops: int = 6
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.4)
    local_per_frame: bool = True  # each frame draws its own local crops (official; the paper is silent)
    local_flip: bool = True  # DINO flips local crops (p 0.5); the official code never does
    color_per_frame: bool = True  # colour jitter, blur, solarisation drawn per frame (official)
    global_blur_p: tuple[float, float] = (1.0, 0.1)  # DINO: view 1, view 2 (official single view: 0.1)
    global_solarize_p: tuple[float, float] = (0.0, 0.2)  # DINO (official: none)
    local_blur_p: float = 0.5


@dataclass
class OptimCfg:
    optimizer: str = "adamw"  # adamw (official; DINO's choice for ViTs) | lars (what the paper states)
    lr: float = 5e-4  # at batch 256 (scaled by batch/256)
    allow_small_lars_lr: bool = False  # LARS with lr < 1e-2 barely moves a ViT: refused unless this is true
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    clip_grad: float = 3.0  # 0: off
    clip_mode: str = "per_param"  # per_param (DINO) | global
    freeze_last_layer_epochs: float = 1.0
    decay_head_gain: bool = True  # DINO's rule: the head's weight-norm gain g ([out, 1], 2-D) is weight-decayed


@dataclass
class TrainCfg:
    batch_size: int = 16  # clips per GPU
    epochs: float = 100.0  # in units of epoch_unit
    epoch_unit: str = "source_frames"  # source_frames: one clip per source frame (official, 60 fps for WT),
    #   i.e. valid starts x fps_source/fps_stored | stored_frames: one clip per stored valid start
    seed: int = 0
    precision: str = "bf16"  # bf16 | fp16 | fp32
    compile: bool = False
    num_workers: int = 8
    loader: str = "auto"  # auto (DALI when installed, else torch) | dali | torch
    max_bad_fraction: float = 0.01  # unreadable clips tolerated before the run stops
    checkpoint_every: int = 1000
    log_every: int = 20
    maps_every: int = 500  # PNG of tracked objects on a fixed clip
    keep_checkpoints: int = 2  # the newest step checkpoints kept in the run folder (>= 1)
    keep_every: int = 0  # also keep (and write) every checkpoint whose step is a multiple of this (0: off)
    collapse_logs: int = 3  # logs in a row with a collapsed-looking teacher before the warning (dora/train/health.py)
    collapse_entropy: float = 0.95  # near-uniform: teacher entropy above this fraction of ln K
    collapse_mass: float = 0.9  # one prototype: the batch-mean teacher distribution's largest entry above this
    memory_check: bool = True  # refuse a CPU run whose step needs more memory than is available (plan.py)


@dataclass
class EvalCfg:
    knn_data: str | None = None  # ROOT/train/<class>/, ROOT/val/<class>/: teacher k-NN top-1 during training
    every_epochs: float = 1.0
    knn_k: int = 20
    knn_temperature: float = 0.07
    knn_crop: int = 224  # DINO's evaluation transform at this crop (resize = crop * 256 / 224)
    knn_batch_size: int = 64


@dataclass
class Config:
    model: ModelCfg = field(default_factory=ModelCfg)
    dora: DoRACfg = field(default_factory=DoRACfg)
    loss: LossCfg = field(default_factory=LossCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "dora.method": ("dora", "dino"),
    "loss.teacher_temp_per": ("epoch", "step"),
    "dora.sk_scale": ("assignment", "marginal"),
    "dora.mask": ("soft", "binary"),
    "dora.mask_source": ("object", "random", "random_prototypes"),
    "dora.random_mask": ("ibot", "keep"),
    "dora.global_views": (1, 2),
    "optim.optimizer": ("lars", "adamw"),
    "model.pos_embed_resample": ("timm", "dino"),
    "optim.clip_mode": ("per_param", "global"),
    "train.precision": ("bf16", "fp16", "fp32"),
    "train.epoch_unit": ("source_frames", "stored_frames"),
    "train.loader": ("auto", "dali", "torch"),
}


def _coerce(key: str, value, tp):
    """`value` as type `tp`, or ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key {key!r}: expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
        return value
    raise TypeError(tp)


def _apply(cfg, data: dict, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in names:
            raise ConfigError(f"config key {key!r} is unknown; valid keys{' in ' + prefix[:-1] if prefix else ''}: "
                              f"{', '.join(names)}")
        current = getattr(cfg, k)
        if dataclasses.is_dataclass(current):
            if not isinstance(v, dict):
                keys = ", ".join(f.name for f in dataclasses.fields(current))
                raise ConfigError(f"config key {key!r} is a section; give its keys ({keys})")
            _apply(current, v, f"{key}.")
            continue
        value = _coerce(key, v, hints[k])
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(map(str, CHOICES[key]))}")
        setattr(cfg, k, value)


def parse_override(text: str) -> dict:
    """'optim.lr=1e-3' -> {'optim': {'lr': 0.001}} (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optim.lr=1e-3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def config_from_dict(data: dict, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A Config from a dict such as the one stored in a checkpoint, then overrides; validated."""
    cfg = Config()
    _apply(cfg, data)
    for text in overrides:
        _apply(cfg, parse_override(text))
    check(cfg)
    return cfg


SHIPPED = Path(__file__).resolve().parents[1] / "configs"  # the repository's configs/ (an editable install)


def shipped_names() -> list[str]:
    """The names of the configs shipped in configs/ (what `--config NAME` accepts from any folder)."""
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def resolve_config(path: str | Path | None) -> Path | None:
    """The one way every command finds `--config`: an existing file as given; else a shipped config named
    `NAME`, `NAME.yaml` or `configs/NAME.yaml` (so the README's commands work from any folder); else
    ConfigError listing the shipped names."""
    if path is None:
        return None
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; --config takes a YAML file or a shipped config name "
                          f"({', '.join(shipped_names())})")
    shipped_form = len(p.parts) == 1 or (len(p.parts) == 2 and p.parts[0] == "configs")
    if shipped_form and p.suffix in ("", ".yaml"):
        shipped = SHIPPED / f"{p.stem}.yaml"
        if shipped.is_file():
            return shipped
    raise ConfigError(f"{p}: config file not found; give a YAML file or a shipped config name "
                      f"({', '.join(shipped_names())})")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file (if any; `resolve_config`), then each override in order; validated."""
    cfg = Config()
    if path is not None:
        p = resolve_config(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected sections like `model:` and `optim:` at the top level")
        _apply(cfg, data)
    for text in overrides:
        _apply(cfg, parse_override(text))
    check(cfg)
    return cfg


LARS_MIN_LR = 1e-2  # below this base lr a LARS run is refused (docs/DEVIATIONS.md, optimiser)

# The smallest value of each numeric key that means something (None, where allowed, is never checked).
MINIMUM = {
    "model.depth": 1, "model.embed_dim": 1, "model.num_heads": 1, "model.out_dim": 1, "model.hidden_dim": 1,
    "model.bottleneck_dim": 1, "model.last_block_heads": 1, "dora.num_objects": 1, "dora.sk_iters": 1,
    "data.clip_frames": 1, "data.precrop_size": 1, "data.global_size": 1, "data.local_crops": 0,
    "data.local_size": 1, "train.batch_size": 1, "train.epochs": 0, "train.num_workers": 0,
    "train.checkpoint_every": 1, "train.log_every": 1, "train.maps_every": 1, "train.keep_checkpoints": 1,
    "train.keep_every": 0, "train.collapse_logs": 1, "eval.knn_k": 1, "eval.knn_crop": 1, "eval.knn_batch_size": 1,
}
POSITIVE = ("loss.student_temp", "loss.teacher_temp", "loss.warmup_teacher_temp", "data.clip_stride_s",
            "eval.every_epochs", "eval.knn_temperature")


def check_ranges(cfg: Config) -> None:
    """Every numeric key inside its meaningful range, and model.arch a timm ViT: one line naming the key."""
    for key, low in MINIMUM.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None and value < low:
            hint = "; 0 writes the step-0 checkpoint and stops" if key == "train.epochs" else ""
            raise ConfigError(f"config key {key!r}: {value:g} must be at least {low}{hint}")
    for key in POSITIVE:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not value > 0:
            raise ConfigError(f"config key {key!r}: {value:g} must be greater than 0")
    arch = cfg.model.arch
    if not arch.startswith(("vit_", "deit_")) or not _timm_has(arch):
        raise ConfigError(f"config key 'model.arch': {arch!r} is not a timm ViT; use one such as "
                          "vit_small_patch16_224, vit_base_patch16_224 or vit_tiny_patch16_224")


def _timm_has(arch: str) -> bool:
    import timm

    return timm.is_model(arch)


def check(cfg: Config) -> None:
    """Each key's range, then relations between keys."""
    check_ranges(cfg)
    heads = cfg.model.last_block_heads
    if cfg.dora.method == "dora" and heads is not None and cfg.dora.num_objects > heads:
        raise ConfigError(f"config key 'dora.num_objects': {cfg.dora.num_objects} objects need at least as many "
                          f"heads in the last block; set model.last_block_heads >= {cfg.dora.num_objects}")
    o = cfg.optim
    if o.optimizer == "lars" and o.lr < LARS_MIN_LR and not o.allow_small_lars_lr:
        raise ConfigError(f"config key 'optim.lr': {o.lr:g} with LARS (trust ratio 1e-3) barely moves the weights; "
                          f"use optim.optimizer=adamw, a LARS lr >= {LARS_MIN_LR:g}, or optim.allow_small_lars_lr=true")
    if cfg.data.clip_frames < 1 or cfg.dora.num_objects < 1:
        raise ConfigError("config keys 'data.clip_frames' and 'dora.num_objects' must be at least 1")
    lo = cfg.loss
    if lo.teacher_temp_per == "epoch" and lo.warmup_teacher_temp_epochs != int(lo.warmup_teacher_temp_epochs):
        raise ConfigError(f"config key 'loss.warmup_teacher_temp_epochs': {lo.warmup_teacher_temp_epochs:g} is not a "
                          "whole number of epochs, which loss.teacher_temp_per=epoch needs; round it, or use "
                          "loss.teacher_temp_per=step")
    if cfg.model.img_size is not None and cfg.model.img_size < 1:
        raise ConfigError(f"config key 'model.img_size': {cfg.model.img_size} must be a positive multiple of the "
                          "patch size (e.g. 224, or 64 for a 4 x 4 grid of 16 px patches)")
    t = cfg.train
    for key, value in (("collapse_entropy", t.collapse_entropy), ("collapse_mass", t.collapse_mass)):
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"config key 'train.{key}': {value:g} must be in (0, 1]")
