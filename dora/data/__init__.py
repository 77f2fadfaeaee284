"""Batches of augmented clips for training: augmentation parameters, host batches, DALI/torch views, loader."""

from dora.data.batches import BatchSource
from dora.data.images import ImageSource
from dora.data.loader import Loader, choose_backend, dali_to_torch, render_host_batch
from dora.data.normalization import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "denormalize", "normalize", "BatchSource", "ImageSource", "Loader",
    "choose_backend", "dali_to_torch", "render_host_batch",
]
