"""Batches of augmented clips for training: augmentation parameters, host batches, DALI/torch views, loader."""

from dora.data.batches import BatchSource
from dora.data.images import ImageSource
from dora.data.loader import Loader, choose_backend, dali_to_torch, render_host_batch

__all__ = ["BatchSource", "ImageSource", "Loader", "choose_backend", "dali_to_torch", "render_host_batch"]
