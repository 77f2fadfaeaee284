"""Exports of the teacher backbone for the dense toolkits: Hugging Face transformers (hf), mmsegmentation
(mmseg), MAE/ViTDet-style loaders (mae) and SeqTrack (seqtrack). `dora.checkpoint.export` dispatches here."""

from dora.export.formats import DENSE, HF_FILES, claim_target, describe, write_dense
from dora.export.vit_keys import VitShape, plain_vit, to_hf, to_mae, to_mmseg

__all__ = ["DENSE", "HF_FILES", "claim_target", "describe", "write_dense", "VitShape", "plain_vit", "to_hf",
           "to_mae", "to_mmseg"]
