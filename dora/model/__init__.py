"""The networks and the method: ViT backbone, DINO head, tracker (eqs. 1-7), losses (eqs. 8-10), DoRA."""

from dora.model.method import DoRA
from dora.model.tracker import map_entropy, mask_coverage
from dora.model.vit import QKTap, create_backbone, num_heads, patch_size, patch_tokens, tokens

__all__ = [
    "map_entropy", "mask_coverage", "DoRA", "QKTap", "create_backbone", "num_heads", "patch_size",
    "patch_tokens", "tokens",
]
