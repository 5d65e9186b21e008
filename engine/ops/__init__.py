"""Mask operations of the hot path. Each public function runs the project's CUDA kernel (kernels/, loaded
from ``libstreamseg_kernels.so`` on first use) on CUDA tensors when the library is built, and its
pure-torch (or pycocotools) reference, ``<op>_reference`` beside it, otherwise. ``backend()`` says which
one this process uses; ``STREAMSEG_OPS=reference`` forces the references."""

from engine.ops._library import backend
from engine.ops.fuse_masks import fuse_masks
from engine.ops.mask_iou import mask_iou
from engine.ops.overlay import masks_to_id_map, overlay
from engine.ops.resize_threshold import resize_threshold
from engine.ops.rle import rle_encode

__all__ = ["backend", "fuse_masks", "mask_iou", "masks_to_id_map", "overlay", "resize_threshold",
           "rle_encode"]
