"""Mask operations of the hot path. Each public function runs the project's CUDA kernel on CUDA tensors
when the kernel library is built, and its pure-torch (or pycocotools) reference otherwise."""

from engine.ops.overlay import masks_to_id_map, overlay
from engine.ops.rle import rle_encode

__all__ = ["masks_to_id_map", "overlay", "rle_encode"]
