"""The key -> shape lists that the dense toolkits' own ViT-S/16 classes build, kept as test data.

tests/test_dense_exports.py checks `dora-train export --to mmseg|mae|seqtrack` against these lists
(the project's test suite cannot install mmcv, timm 0.3.2 or SeqTrack). Each list is made here from the
library's class itself, in a virtual environment that has the library, and records where it came
from (library, version, class, constructor arguments) and what the library's pretrained-weight loader
does with a file (keys it needs but removes, keys it resizes, keys a fine-tuning initialises, keys a
non-strict load drops). Usage, one library per environment (they pin different timm versions):

  mmseg:    pip install mmengine mmcv-lite==2.1.0 mmsegmentation ftfy regex    (torch from anywhere)
            python bench/dense_keylists.py mmseg
            mmcv-lite has no compiled ops; mmseg's package imports mmcv.ops for other models, so
            mmcv.ops is replaced by an empty module at import (its VisionTransformer uses no op of it)
  mae:      pip install timm==0.3.2; a checkout of facebookresearch/mae
            python bench/dense_keylists.py mae --src PATH/mae
            (timm 0.3.2 imports torch._six, gone from torch 2: it is given collections.abc, MAE's own fix)
  seqtrack: pip install timm==0.5.4 (SeqTrack's install.sh); a checkout of microsoft/VideoX
            python bench/dense_keylists.py seqtrack --src PATH/VideoX/SeqTrack

`--check FILE` also loads an export of that format through the library's own loading code and says
whether it loads strictly (mmseg: and whether its last-layer tokens equal timm's, given `--timm FILE`,
the `--to timm` export of the same checkpoint).
"""

from __future__ import annotations

import argparse
import collections.abc
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "keylists"
VIT_S16 = dict(embed_dim=384, depth=12, num_heads=6, patch_size=16)


def _keys(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class _NoOps(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `mmcv.ops` and its submodules as empty modules: any name imported from them is a class
    that raises when used. mmcv-lite lacks the compiled ops that mmseg's package imports eagerly."""

    def find_spec(self, name, path, target=None):
        if name == "mmcv.ops" or name.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def missing(attr: str):
            if attr.startswith("__"):
                raise AttributeError(attr)

            def fail(*_a, **_k):
                raise NotImplementedError(f"mmcv.ops.{attr}: not in mmcv-lite")

            return type(attr, (), {"__init__": fail})

        module.__getattr__ = missing
        return module

    def exec_module(self, module):
        pass


def mmseg_lists() -> tuple[dict, nn.Module]:
    sys.meta_path.insert(0, _NoOps())
    from mmseg.models.backbones import VisionTransformer

    # upernet_vit-b16_ln_mln.py's backbone at ViT-S/16 widths; patch_bias=True because the class's default
    # (False) has no place for the patch embedding's bias, which vit2mmseg.py and our export keep.
    args = dict(img_size=512, patch_size=16, embed_dims=384, num_layers=12, num_heads=6, mlp_ratio=4,
                out_indices=(2, 5, 8, 11), qkv_bias=True, with_cls_token=True, final_norm=True, patch_bias=True,
                norm_cfg=dict(type="LN", eps=1e-6), act_cfg=dict(type="GELU"), interpolate_mode="bicubic")
    model = VisionTransformer(**args)
    header = {
        "library": "mmsegmentation", "version": _version("mmsegmentation"),
        "class": "mmseg.models.backbones.VisionTransformer",
        "with": {"mmengine": _version("mmengine"), "mmcv-lite": _version("mmcv-lite"),
                 "note": "mmcv-lite has no compiled ops: mmcv.ops was an empty module at import; "
                         "VisionTransformer uses none of them"},
        "loader": "VisionTransformer.init_weights with init_cfg=dict(type='Pretrained', checkpoint=FILE) (what "
                  "model.pretrained sets): reads FILE['state_dict'] (or FILE), resizes pos_embed to "
                  "img_size/patch_size bicubically when its grid differs, then load_state_dict(strict=False)",
        "warning": "mmseg's own ViT configs leave patch_bias at its default False: a non-strict load then drops "
                   "patch_embed.projection.bias silently; set patch_bias=True",
    }
    variants = {"patch_bias=True": {"args": args, "keys": _keys(model), "loader_resizes": ["pos_embed"]}}
    return {**header, "variants": variants}, model


def mae_lists(src: Path) -> tuple[dict, nn.Module]:
    sys.modules.setdefault("torch._six", types.SimpleNamespace(container_abcs=collections.abc))
    sys.path.insert(0, str(src))
    import models_vit
    import timm

    base = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4, qkv_bias=True,
                norm_layer="partial(nn.LayerNorm, eps=1e-6)")
    made = {}
    for pool in (True, False):
        kw = {**base, "norm_layer": partial(nn.LayerNorm, eps=1e-6), "global_pool": pool}
        made[pool] = models_vit.VisionTransformer(**kw)
    head = ["head.weight", "head.bias"]
    variants = {
        "global_pool=True (main_finetune.py's default)": {
            "args": {**base, "global_pool": True}, "keys": _keys(made[True]), "loader_resizes": ["pos_embed"],
            "initialised_by_finetuning": head + ["fc_norm.weight", "fc_norm.bias"],
            "dropped_by_non_strict_load": ["norm.weight", "norm.bias"]},
        "global_pool=False (--cls_token)": {
            "args": {**base, "global_pool": False}, "keys": _keys(made[False]), "loader_resizes": ["pos_embed"],
            "initialised_by_finetuning": head},
    }
    return {
        "library": "facebookresearch/mae", "version": "",
        "class": "models_vit.VisionTransformer (subclass of timm.models.vision_transformer.VisionTransformer)",
        "with": {"timm": timm.__version__, "note": "torch._six given collections.abc (timm 0.3.2 on torch 2)"},
        "loader": "main_finetune.py: FILE['model']; head.* dropped if shapes differ; util.pos_embed."
                  "interpolate_pos_embed (cls position kept, grid resized); load_state_dict(strict=False); asserts "
                  "missing == {head.*} (+ fc_norm.* with global_pool)",
        "variants": variants,
    }, made[False]


def seqtrack_lists(src: Path) -> tuple[dict, nn.Module]:
    path = src / "lib" / "models" / "seqtrack" / "vit.py"
    spec = importlib.util.spec_from_file_location("seqtrack_vit", path)
    vit = importlib.util.module_from_spec(spec)
    sys.modules["seqtrack_vit"] = vit  # timm's register_model looks the module up
    spec.loader.exec_module(vit)
    import timm

    # vit_base_patch16's constructor at ViT-S/16 widths (SeqTrack defines no ViT-S); GOT-10k configs: 256/256
    args = dict(search_size=256, template_size=256, patch_size=16, num_classes=0, embed_dim=384, depth=12,
                num_heads=6, mlp_ratio=4, qkv_bias=True, norm_layer="partial(nn.LayerNorm, eps=1e-6)")
    model = vit.VisionTransformer(**{**args, "norm_layer": partial(nn.LayerNorm, eps=1e-6)})
    variants = {"search 256, template 256": {
        "args": args, "keys": _keys(model), "loader_resizes": ["pos_embed"],
        "removed_by_loader": {"cls_token": [1, 1, 384]}}}
    return {
        "library": "microsoft/VideoX SeqTrack", "version": "",
        "class": "lib/models/seqtrack/vit.py VisionTransformer (the encoder, built as vit_base_patch16 builds it)",
        "with": {"timm": timm.__version__},
        "loader": "vit.load_pretrained(pretrain_type='mae'): FILE['model']; pos_embed[:, 1:] resized (bicubic, "
                  "align_corners=True) to the search and template grids and concatenated; del cls_token; "
                  "load_state_dict(strict=True)",
        "variants": variants,
    }, model


def write(name: str, data: dict, out: Path, commit: str | None) -> Path:
    if commit:
        data["version"] = f"commit {commit}"
    data = {**data, "made_by": f"python bench/dense_keylists.py {name}",
            "environment": {"torch": torch.__version__, "python": platform.python_version()}}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}_vit_s16.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def check_mmseg(model_cls_args: dict, file: Path, timm_file: Path | None) -> None:
    from mmseg.models.backbones import VisionTransformer

    sd = torch.load(file, map_location="cpu", weights_only=True)["state_dict"]
    at224 = VisionTransformer(**{**model_cls_args, "img_size": 224})
    at224.eval()  # mmseg's train() returns None
    print("mmseg strict load at img_size 224:", at224.load_state_dict(sd, strict=True))
    at512 = VisionTransformer(**model_cls_args, init_cfg=dict(type="Pretrained", checkpoint=str(file)))
    at512.init_weights()  # mmseg's own loader: resizes pos_embed 14x14 -> 32x32
    same = all(torch.equal(at512.state_dict()[k], v) for k, v in sd.items() if k != "pos_embed")
    print("mmseg init_weights at img_size 512: every tensor but pos_embed as in the file:", same)
    if timm_file is not None:
        import timm  # the project's timm (this environment sees it)

        ref = timm.create_model("vit_small_patch16_224", num_classes=0).eval()
        ref.load_state_dict(torch.load(timm_file, map_location="cpu", weights_only=True))
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want = ref.forward_features(x)[:, 1:].reshape(2, 14, 14, 384).permute(0, 3, 1, 2)
            got = at224(x)[-1]
        print(f"mmseg layer-11 tokens vs timm forward_features: max |diff| {(got - want).abs().max().item():.2e}")


def check_mae(file: Path) -> None:
    from functools import partial as p

    import models_vit
    from util.pos_embed import interpolate_pos_embed

    for pool in (True, False):
        model = models_vit.VisionTransformer(global_pool=pool, num_classes=150, **VIT_S16, mlp_ratio=4,
                                             qkv_bias=True, norm_layer=p(nn.LayerNorm, eps=1e-6))
        ckpt = torch.load(file, map_location="cpu", weights_only=True)["model"]
        interpolate_pos_embed(model, ckpt)  # as main_finetune.py (no resize at 224)
        msg = model.load_state_dict(ckpt, strict=False)
        print(f"MAE global_pool={pool}: missing {sorted(msg.missing_keys)}, unexpected {sorted(msg.unexpected_keys)}")


def check_seqtrack(file: Path) -> None:
    vit = sys.modules["seqtrack_vit"]
    model = vit.VisionTransformer(search_size=256, template_size=256, patch_size=16, num_classes=0, embed_dim=384,
                                  depth=12, num_heads=6, mlp_ratio=4, qkv_bias=True,
                                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
    with tempfile.TemporaryDirectory() as hub:
        os.environ["TORCH_HOME"] = hub  # load_url copies the file:// URL into the hub cache
        cfg = {**vit.default_cfgs["vit_base_patch16_224_mae"], "url": Path(file).resolve().as_uri()}
        vit.load_pretrained(model, pretrain_type="mae", cfg=cfg, num_classes=0, strict=True)
    print("SeqTrack load_pretrained(pretrain_type='mae', strict=True): loaded")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("library", choices=["mmseg", "mae", "seqtrack"])
    ap.add_argument("--src", type=Path, help="mae: the MAE checkout; seqtrack: VideoX/SeqTrack")
    ap.add_argument("--commit", help="mae, seqtrack: the commit of the checkout given as --src")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", type=Path, help="an export of this format to load with the library's loader")
    ap.add_argument("--timm", type=Path, help="mmseg --check: the --to timm export of the same checkpoint")
    a = ap.parse_args()
    if a.library != "mmseg" and (a.src is None or a.commit is None):
        ap.error(f"{a.library} needs --src (the library's checkout) and --commit (its commit)")
    if a.library == "mmseg":
        data, _ = mmseg_lists()
    elif a.library == "mae":
        data, _ = mae_lists(a.src)
    else:
        data, _ = seqtrack_lists(a.src)
    print(write(a.library, data, a.out, a.commit))
    if a.check is None:
        return
    if a.library == "mmseg":
        check_mmseg(data["variants"]["patch_bias=True"]["args"], a.check, a.timm)
    elif a.library == "mae":
        check_mae(a.check)
    else:
        check_seqtrack(a.check)


if __name__ == "__main__":
    main()
