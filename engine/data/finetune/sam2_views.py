"""SAM 2's frozen image encoder, run once per augmented view of each training image, cached on disk.

Why views are augmented before embedding, and cached per view: the image encoder is frozen, so its
features of a picture never change during training, and they are most of the cost (hiera-t on this
2-core CPU: ~80 ms at 256 px, ~1.5 s at 1024 px, against a few ms for the prompt encoder and mask
decoder). Augmentation changes the picture, so it must happen before the encoder; augmenting each step
would run the encoder each step and give caching up. Instead each image gets ``views`` augmented views
(view 0 is the image itself), each embedded once. Training draws from the fixed set of views: augmentation
diversity is bounded by ``views`` (a few per image), which is the price of steps that never run the encoder.

Each view is one ``albumentations`` pipeline call on the image and all its masks together, so geometric
transforms move the picture and the masks alike (masks with nearest-neighbour interpolation); photometric
ones touch only the picture. The pipeline is seeded per (seed, image, view): the same run makes the same
views. Files are keyed by a digest of everything that changes them (image bytes, masks, model config,
image size, encoder weights, augmentation settings, seed, view), so a changed input never reads a stale
view, and a rerun with other training settings reuses them.

Sizes at fp16 (hiera, any size): 256 px ~0.5 MB a view, 512 px ~2 MB, 1024 px ~8.4 MB.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.dataset import Sample
from engine.data.finetune.common import atomic_save

IMG_MEAN = (0.485, 0.456, 0.406)  # sam2's frame normalisation (the tracker applies the same)
IMG_STD = (0.229, 0.224, 0.225)
AUGMENTATION_VERSION = 1  # part of every cache key: bump when augmentation() changes
MIN_MASK_PIXELS = 16  # at the model's size: smaller instances (an object cropped away) teach nothing


def augmentation(seed: int, *, motion: bool = False):
    """The albumentations pipeline of one view: flips, scale/shift/rotation, colour and noise; with
    ``motion``, the small rigid motion of one video frame to the next instead (no flip)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network on import
    import albumentations as A
    import cv2

    if motion:
        # A frame a few frames later: the loop's scenes move an object up to ~5 % of the frame's width
        # and turn it a few degrees per frame. A flip or a 10 % jump would put the object where no
        # frame of a video puts it, and memory attention would learn that where an object was says
        # nothing about where it is (it then segments the same thing whatever the memory holds).
        return A.Compose([
            A.Affine(scale=(0.95, 1.05), translate_percent=(-0.05, 0.05), rotate=(-5, 5),
                     border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
            A.GaussNoise(std_range=(0.01, 0.03), p=0.2),
        ], seed=seed)
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.8, 1.25), translate_percent=(-0.1, 0.1), rotate=(-15, 15),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.8),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=20, val_shift_limit=15, p=0.3),
        A.GaussNoise(std_range=(0.01, 0.04), p=0.2),
    ], seed=seed)


def augment(image: np.ndarray,  # [H, W, 3] uint8
            masks: np.ndarray,  # [N, H, W] bool
            *, seed: int, motion: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One augmented view: the image and its masks moved by one draw of ``augmentation(seed, motion=...)``."""
    out = augmentation(seed, motion=motion)(image=image, masks=[m.astype(np.uint8) for m in masks])
    moved = np.stack(out["masks"]).astype(bool) if len(masks) else masks
    return np.ascontiguousarray(out["image"]), moved


def preprocess(image: np.ndarray | torch.Tensor,  # [H, W, 3] uint8 RGB
               size: int, *, device: torch.device | str = "cpu") -> torch.Tensor:  # -> [1, 3, S, S] float32
    """A frame as the tracker feeds it to SAM 2: resized to S x S (bilinear, antialiased), normalised."""
    x = torch.as_tensor(image).to(device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMG_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMG_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def masks_at(masks: np.ndarray, size: int) -> torch.Tensor:  # [N, H, W] bool -> [N, S, S] bool
    """Masks resized to the model's square input the way the picture is (bilinear, antialiased, >= 0.5)."""
    if len(masks) == 0:
        return torch.zeros((0, size, size), dtype=torch.bool)
    m = torch.from_numpy(masks).float()[:, None]
    m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return m[:, 0] >= 0.5


@torch.inference_mode()
def encode(model, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:  # images: [B, 3, S, S]
    """SAM 2's image features of each image as its prompt path reads them on a first (prompted) frame:
    the top level with ``no_mem_embed`` added, and the two high-resolution levels after the mask
    decoder's 1x1 projections (``conv_s0``/``conv_s1``: they run inside ``forward_image``, so they are
    frozen with the encoder)."""
    backbone = model.forward_image(images)
    _, feats, _, sizes = model._prepare_backbone_features(backbone)
    if model.directly_add_no_mem_embed:
        feats[-1] = feats[-1] + model.no_mem_embed
    maps = [f.permute(1, 2, 0).reshape(images.shape[0], -1, *s) for f, s in zip(feats, sizes)]
    return [{"image_embed": maps[-1][b].half().cpu(), "high_res_0": maps[0][b].half().cpu(),
             "high_res_1": maps[1][b].half().cpu()} for b in range(images.shape[0])]


@dataclass(frozen=True, slots=True)
class View:
    """One cached view: features (fp16) and the instances' masks at the model's size."""

    image_embed: torch.Tensor  # [256, S/16, S/16]
    high_res_0: torch.Tensor  # [32, S/4, S/4]
    high_res_1: torch.Tensor  # [64, S/8, S/8]
    masks: torch.Tensor  # [N, S, S] bool, the sample's instances that survived the view (MIN_MASK_PIXELS)
    instances: torch.Tensor  # [N] int64: which of the sample's instances each mask is


class ViewCache:
    """Makes and reads the cached views of a dataset's samples (see the module docstring)."""

    def __init__(self, folder: Path, model, *, model_key: str, image_size: int, seed: int,
                 memory_bytes: int = 1 << 30) -> None:
        self.folder, self.model, self.size, self.seed = folder, model, image_size, seed
        self.model_key = model_key
        self._memory: OrderedDict[Path, View] = OrderedDict()  # least recently used first
        self._memory_bytes, self._limit = 0, memory_bytes
        self._paths: dict[tuple[Path, int], Path] = {}  # a key reads the image: once per run is enough
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, sample: Sample, view: int, *, motion: bool = False) -> Path:
        """The file of ``view`` of ``sample``; ``motion``: of its ``view``-th motion view (one video frame
        to the next: ``augmentation(motion=True)``). View 0 is the image itself either way."""
        motion = motion and view > 0
        known = self._paths.get((sample.image, view, motion))
        if known is None:
            known = self._paths[(sample.image, view, motion)] = self._key_path(sample, view, motion)
        return known

    def _key_path(self, sample: Sample, view: int, motion: bool) -> Path:
        digest = hashlib.sha256()
        parts = (self.model_key, self.size, AUGMENTATION_VERSION, self.seed if view else 0, view)
        for part in parts + (("motion",) if motion else ()):
            digest.update(repr(part).encode())
        digest.update(sample.image.read_bytes())
        for rle in sample.rles:
            digest.update(rle["counts"] if isinstance(rle["counts"], bytes) else str(rle["counts"]).encode())
        return self.folder / f"{digest.hexdigest()[:32]}.pt"

    def ensure(self, jobs: list[tuple[Sample, int]], *, motion: bool = False, batch: int = 4,
               progress: bool = True) -> None:
        """Compute the views (``motion``: the motion views) not on disk yet (``batch`` images per encoder call)."""
        from tqdm import tqdm

        todo = [(s, v) for s, v in jobs if not self.path(s, v, motion=motion).exists()]
        with tqdm(total=len(todo), desc="embedding views", unit="view", disable=not progress or not todo) as bar:
            for start in range(0, len(todo), batch):
                chunk = todo[start:start + batch]
                made = [self._augmented(s, v, motion) for s, v in chunk]
                device = next(self.model.parameters()).device
                feats = encode(self.model, torch.cat([preprocess(img, self.size, device=device) for img, _ in made]))
                for (sample, view), (_, masks), f in zip(chunk, made, feats):
                    at = masks_at(masks, self.size)
                    keep = at.flatten(1).sum(1) >= MIN_MASK_PIXELS
                    blob = {**f, "masks": torch.from_numpy(np.packbits(at[keep].numpy(), axis=-1)),
                            "instances": torch.nonzero(keep)[:, 0]}
                    atomic_save(blob, self.path(sample, view, motion=motion))
                    bar.update(1)

    def get(self, sample: Sample, view: int, *, motion: bool = False) -> View:
        path = self.path(sample, view, motion=motion)
        cached = self._memory.get(path)
        if cached is not None:
            self._memory.move_to_end(path)
            return cached
        blob = torch.load(path, map_location="cpu", weights_only=True)
        masks = torch.from_numpy(np.unpackbits(blob["masks"].numpy(), axis=-1, count=self.size).astype(bool))
        view_ = View(image_embed=blob["image_embed"], high_res_0=blob["high_res_0"], high_res_1=blob["high_res_1"],
                     masks=masks, instances=blob["instances"])
        self._memory[path] = view_
        self._memory_bytes += _nbytes(view_)
        while self._memory_bytes > self._limit and len(self._memory) > 1:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= _nbytes(old)
        return view_

    def _augmented(self, sample: Sample, view: int, motion: bool) -> tuple[np.ndarray, np.ndarray]:
        image, masks = sample.read_image(), sample.masks()
        if view == 0:
            return image, masks
        kind = ":motion" if motion else ""
        view_seed = int.from_bytes(hashlib.sha256(f"{self.seed}:{sample.image.name}:{view}{kind}".encode())
                                   .digest()[:4], "little")
        return augment(image, masks, seed=view_seed, motion=motion)


def _nbytes(view: View) -> int:
    return sum(t.numel() * t.element_size() for t in (view.image_embed, view.high_res_0, view.high_res_1,
                                                       view.masks, view.instances))
