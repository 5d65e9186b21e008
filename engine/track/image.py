"""Still images with SAM 2: masks from point and box prompts, and automatic masks for everything.

This is SAM 2's image path, as ``sam2``'s ``SAM2ImagePredictor`` and ``SAM2AutomaticMaskGenerator`` run
it (Ravi et al., "SAM 2: Segment Anything in Images and Videos", 2024; the automatic generator is SAM's,
Kirillov et al. 2023), on the model ``engine.track`` builds and loads. It lives beside the tracker
because it is the same network, loaded the same way, with the same image encoder and prompt heads; a
separate stage package would have to reach into this one for all of them. Results equal sam2's (tests/
track/test_image.py), with these differences in how they are computed:

- Feature map sizes come from the backbone, so any ``image_size`` works (sam2's image predictor
  hard-codes those of 1024).
- Prompt points are padded to a few fixed counts, the padding masked out of the decoder's attention
  (``engine.track.prompts``); prompts of different lengths then decode in one batch. The automatic
  generator pads a short batch of grid points to a power of two (at most ``points_per_batch``): the
  decoder sees a few shapes, and a small grid does not pay for a full batch.
- The automatic generator filters by predicted IoU before upsampling, and upsamples, scores and
  encodes masks a few at a time: memory grows with the image, not with ``points_per_batch`` x 3
  full-resolution logit maps (2.6 GB for sam2's defaults on a 2250x1500 image).
- No hole or sprinkle removal (sam2's default is off too; it needs sam2's compiled extension).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util

from engine.errors import ConfigError
from engine.track.prompts import PaddedPromptDecoder, bucket_size, pad_points
from engine.track.config import IMAGE_MEAN, IMAGE_STD
from engine.track.tracker import encode_images

_LOGIT_CLAMP = 32.0  # sam2's image predictor clamps the low-res logits it returns
_CHUNK_PIXELS = 1 << 25  # full-resolution logits upsampled at once: 128 MB of float32


@dataclass(frozen=True, slots=True)
class ImagePrompt:
    """One object's prompt on an image: points with labels, a box, or both. Pixels of the image."""

    points: tuple[tuple[float, float], ...] = ()  # (x, y)
    labels: tuple[int, ...] = ()  # one per point: 1 foreground, 0 background
    box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2

    def __post_init__(self) -> None:
        if not self.points and self.box is None:
            raise ConfigError("an image prompt needs at least one point or a box")
        if len(self.labels) != len(self.points):
            raise ConfigError(f"{len(self.points)} points but {len(self.labels)} labels: give one label "
                              "(1 foreground, 0 background) per point")
        for (x, y), label in zip(self.points, self.labels):
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ConfigError(f"point ({x}, {y}): coordinates must be finite numbers")
            if label not in (0, 1):
                raise ConfigError(f"point ({x:g}, {y:g}) has label {label}: use 1 (foreground) or 0 "
                                  "(background)")
        if self.box is not None:
            if len(self.box) != 4 or not all(math.isfinite(v) for v in self.box):
                raise ConfigError(f"box {self.box}: give four finite numbers x1, y1, x2, y2")
            x1, y1, x2, y2 = self.box
            if not (x1 < x2 and y1 < y2):
                raise ConfigError(f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is empty or upside down: "
                                  "x1 < x2 and y1 < y2")
        bucket_size(len(self.points) + (2 if self.box is not None else 0))

    def check_inside(self, width: int, height: int) -> None:
        """ConfigError naming the first point or box that is not inside a ``width`` x ``height`` image
        (a point must lie on a pixel: 0 <= x < width; a box's corners may lie on the far edges)."""
        for x, y in self.points:
            if not (0 <= x < width and 0 <= y < height):
                raise ConfigError(f"point ({x:g}, {y:g}) is outside the {width}x{height} image: use "
                                  f"0 <= x < {width} and 0 <= y < {height}")
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            if not (0 <= x1 and 0 <= y1 and x2 <= width and y2 <= height):
                raise ConfigError(f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) reaches outside the {width}x{height} "
                                  "image: keep it within 0..width, 0..height")

    def to_json(self) -> dict:
        out: dict = {}
        if self.points:
            out["points"] = [[float(x), float(y)] for x, y in self.points]
            out["labels"] = [int(v) for v in self.labels]
        if self.box is not None:
            out["box"] = [float(v) for v in self.box]
        return out


@dataclass(frozen=True, slots=True)
class ImageMask:
    """One mask on an image, at the image's resolution."""

    rle: dict  # COCO compressed RLE: {"size": [H, W], "counts": str}
    score: float  # the model's predicted IoU of the mask
    prompt: ImagePrompt
    logits: torch.Tensor | None = None  # [S/4, S/4] float32 low-res logits (prompted masks only)
    stability: float | None = None  # stability score (automatic masks only)

    def decode(self) -> np.ndarray:  # [H, W] bool
        return mask_util.decode({"size": self.rle["size"], "counts": self.rle["counts"].encode()}).astype(bool)

    def to_json(self) -> dict:
        """The CLI's record: mask (COCO RLE), score, prompt; area and bbox (COCO x, y, w, h) as COCO
        computes them; and the stability score of an automatic mask."""
        coco = {"size": self.rle["size"], "counts": self.rle["counts"].encode()}
        out = {"mask": self.rle, "score": round(self.score, 6), "prompt": self.prompt.to_json(),
               "area": int(mask_util.area(coco)), "bbox": [float(v) for v in mask_util.toBbox(coco)]}
        if self.stability is not None:
            out["stability_score"] = round(self.stability, 6)
        return out


@dataclass(frozen=True, slots=True)
class EverythingConfig:
    """The automatic mask generator's settings; the defaults are ``SAM2AutomaticMaskGenerator``'s."""

    points_per_side: int = 32  # the grid of single-point prompts is points_per_side^2
    points_per_batch: int = 64  # prompts decoded at once (the decoder's one batch shape)
    pred_iou_thresh: float = 0.8  # keep masks whose predicted IoU is above this
    stability_score_thresh: float = 0.95  # ... and whose stability score is at least this
    stability_score_offset: float = 1.0  # logit offset of the stability score's two thresholds
    box_nms_thresh: float = 0.7  # box IoU above which the lower-scored of two masks is dropped
    crop_n_layers: int = 0  # also run on 2^i x 2^i crops for i = 1..crop_n_layers (small objects)
    crop_nms_thresh: float = 0.7  # box NMS between crops (smaller crops preferred)
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1  # crop layer i has points_per_side / factor^i points a side
    multimask: bool = True  # three masks per grid point, as sam2

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ConfigError(f"points_per_side={self.points_per_side}, points_per_batch={self.points_per_batch}: "
                              "both must be at least 1")
        if self.crop_n_layers < 0 or self.crop_n_points_downscale_factor < 1:
            raise ConfigError("crop_n_layers must be >= 0 and crop_n_points_downscale_factor >= 1")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}={getattr(self, name)}: use a value in [0, 1]")


@dataclass(frozen=True, slots=True)
class _ImageFeatures:
    embed: torch.Tensor  # [1, C, S/16, S/16] top level, no-memory embedding added
    high_res: list[torch.Tensor]  # [[1, C/8, S/4, S/4], [1, C/4, S/8, S/8]] (empty if the model has none)
    height: int  # the image's own size
    width: int


@dataclass(slots=True)
class _Candidates:
    """Automatic masks of one crop that survived the filters, in the crop's coordinates."""

    rles: list[dict] = field(default_factory=list)
    boxes: list[torch.Tensor] = field(default_factory=list)  # [4] each, sam2's inclusive pixel boxes
    scores: list[float] = field(default_factory=list)
    stability: list[float] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)


class ImageSegmenter:
    """SAM 2 on still images. ``set_image`` once, then ``predict`` any number of prompts; or ``generate``.

    Args:
        model: a sam2 ``SAM2Base`` (``engine.track.model.build_model``).
        precision: the precision policy, as ``TrackerConfig.precision`` (engine.runtime.precision):
            "exact" fp32 (sam2's own predictor's precision, what the parity tests use), "fast" a bf16
            image encoder, "auto" bf16 where the device has bf16 matrix instructions.
        encoder_dtype: the image encoder's dtype, as ``TrackerConfig.encoder_dtype`` ("auto" follows
            ``precision``); the prompt heads run in fp32.
        mask_threshold: logit above which a pixel is in the mask (sam2's default 0).
    """

    def __init__(self, model, *, precision: str = "auto", encoder_dtype: str = "auto",
                 mask_threshold: float = 0.0) -> None:
        from engine.runtime.precision import PrecisionPolicy, dtype_named

        self.model = model
        self.device = model.device
        policy = PrecisionPolicy.for_device(self.device, precision)
        self.encoder_dtype = dtype_named(encoder_dtype, default=policy.image_encoder)
        self.mask_threshold = float(mask_threshold)
        self.decoder = PaddedPromptDecoder(model.sam_mask_decoder, model.sam_prompt_encoder.not_a_point_embed)
        self._mean = torch.tensor(IMAGE_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGE_STD, device=self.device).view(1, 3, 1, 1)
        self._features: _ImageFeatures | None = None

    @classmethod
    def load(cls, config: str = "sam2.1_hiera_t", *, weights: str | Path | None = None, image_size: int = 1024,
             device: torch.device | str = "cpu", seed: int = 0, **kwargs) -> ImageSegmenter:
        """A segmenter for a model name or sam2 config; ``weights`` a checkpoint path, or None /
        ``"random"`` for random weights from ``seed``. WeightsError names a bad file."""
        from engine.weights import RANDOM as RANDOM_WEIGHTS
        from engine.track.model import build_model

        if image_size < 32 or image_size % 32:
            raise ConfigError(f"image_size={image_size}: use a multiple of 32 (SAM 2 was trained at 1024)")
        checkpoint = None if weights is None or str(weights) == RANDOM_WEIGHTS else weights
        model = build_model(config, image_size=image_size, device=device, checkpoint=checkpoint,
                            seed=None if checkpoint else seed)
        return cls(model, **kwargs)

    # ------------------------------------------------------------------ prompted masks
    @torch.inference_mode()
    def set_image(self, image: np.ndarray | torch.Tensor) -> None:  # [H, W, 3] uint8 RGB
        """Compute the image's features once for the prompts that follow."""
        self._features = self._encode(image)

    @torch.inference_mode()
    def predict(self, prompts: Sequence[ImagePrompt], *, multimask: bool = False) -> list[list[ImageMask]]:
        """Masks for each prompt on the image of the last ``set_image``: one per prompt, or the decoder's
        three candidates (in its order) with ``multimask``. All prompts decode as one batch."""
        feats = self._features
        if feats is None:
            raise ConfigError("predict() before set_image(): give the image first")
        if not prompts:
            return []
        for prompt in prompts:
            prompt.check_inside(feats.width, feats.height)
        coords, labels = self._prompt_tensors(prompts, feats)
        low_res, iou = self._decode(feats, coords, labels, multimask=multimask)  # [B, M, h, w], [B, M]
        out = []
        for b, prompt in enumerate(prompts):
            masks = self._upsample(low_res[b], (feats.height, feats.width)) > self.mask_threshold
            rles = _encode_rles(masks)
            clamped = low_res[b].clamp(-_LOGIT_CLAMP, _LOGIT_CLAMP)
            out.append([ImageMask(rle=rles[m], score=float(iou[b, m]), prompt=prompt, logits=clamped[m].cpu())
                        for m in range(low_res.shape[1])])
        return out

    def _prompt_tensors(self, prompts: Sequence[ImagePrompt], feats: _ImageFeatures
                        ) -> tuple[torch.Tensor, torch.Tensor]:  # [B, K, 2] model pixels, [B, K] int32
        """Box corners (labels 2, 3) then points, as sam2 orders them, each prompt padded to the
        longest prompt's bucket."""
        count = max(len(p.points) + (2 if p.box is not None else 0) for p in prompts)
        rows_xy, rows_label = [], []
        for p in prompts:
            xy = ([p.box[:2], p.box[2:]] if p.box is not None else []) + [list(q) for q in p.points]
            codes = ([2, 3] if p.box is not None else []) + list(p.labels)
            coords = torch.tensor(xy, dtype=torch.float32)[None]
            codes_t = torch.tensor(codes, dtype=torch.int32)[None]
            pad = count - len(codes)
            if pad:  # to the longest prompt's length; pad_points below takes it to the bucket
                coords = torch.cat([coords, coords.new_zeros((1, pad, 2))], dim=1)
                codes_t = torch.cat([codes_t, codes_t.new_full((1, pad), -1)], dim=1)
            rows_xy.append(coords)
            rows_label.append(codes_t)
        coords = _to_model_pixels(torch.cat(rows_xy), feats, self.model.image_size)
        return coords.to(self.device), torch.cat(rows_label).to(self.device)

    # ------------------------------------------------------------------ everything
    @torch.inference_mode()
    def generate(self, image: np.ndarray | torch.Tensor, config: EverythingConfig = EverythingConfig()
                 ) -> list[ImageMask]:
        """Masks for everything in ``image`` (SAM's automatic mask generator): a grid of single-point
        prompts on the image and on its crop layers, filtered by predicted IoU and stability, then
        box NMS within each crop and between crops. Ordered as sam2 orders them."""
        from sam2.utils.amg import build_all_layer_point_grids, generate_crop_boxes
        from torchvision.ops import batched_nms, box_area

        image = torch.as_tensor(image)
        _check_image(image)
        height, width = int(image.shape[0]), int(image.shape[1])
        crop_boxes, layers = generate_crop_boxes((height, width), config.crop_n_layers, config.crop_overlap_ratio)
        grids = build_all_layer_point_grids(config.points_per_side, config.crop_n_layers,
                                            config.crop_n_points_downscale_factor)
        rles, boxes, scores, stability, points, crop_of = [], [], [], [], [], []
        for crop_box, layer in zip(crop_boxes, layers):
            found = self._generate_in_crop(image, crop_box, grids[layer], (height, width), config)
            x0, y0 = crop_box[0], crop_box[1]
            rles += found.rles
            boxes += [b + torch.tensor([x0, y0, x0, y0]) for b in found.boxes]
            scores += found.scores
            stability += found.stability
            points += [(x + x0, y + y0) for x, y in found.points]
            crop_of += [crop_box] * len(found.rles)
        order = list(range(len(rles)))
        if len(crop_boxes) > 1 and rles:
            crops = torch.tensor(crop_of, dtype=torch.float32)
            keep = batched_nms(torch.stack(boxes).float(), 1 / box_area(crops), torch.zeros(len(rles)),
                               iou_threshold=config.crop_nms_thresh)
            order = keep.tolist()
        return [ImageMask(rle=rles[i], score=scores[i], stability=stability[i],
                          prompt=ImagePrompt(points=(points[i],), labels=(1,))) for i in order]

    def _generate_in_crop(self, image: torch.Tensor, crop_box: list[int], grid: np.ndarray,
                          size: tuple[int, int], config: EverythingConfig) -> _Candidates:
        from torchvision.ops import batched_nms

        x0, y0, x1, y1 = crop_box
        feats = self._encode(image[y0:y1, x0:x1])
        crop_hw = (feats.height, feats.width)
        grid_points = torch.as_tensor(grid * np.array([[feats.width, feats.height]]), dtype=torch.float32)
        found = _Candidates()
        batch = config.points_per_batch
        for start in range(0, len(grid_points), batch):
            pts = grid_points[start:start + batch]  # [n, 2] crop pixels
            n = len(pts)
            # A short batch is filled up with copies of its last point, whose results are dropped, to a
            # power of two: the decoder meets at most log2(points_per_batch) + 2 batch shapes.
            width = min(batch, 1 << (n - 1).bit_length())
            padded = torch.cat([pts, pts[-1:].expand(width - n, 2)]) if n < width else pts
            coords = _to_model_pixels(padded, feats, self.model.image_size)[:, None, :].to(self.device)
            labels = torch.ones((width, 1), dtype=torch.int32, device=self.device)
            low_res, iou = self._decode(feats, coords, labels, multimask=config.multimask)
            low_res, iou = low_res[:n].flatten(0, 1), iou[:n].flatten(0, 1)  # [n*M, h, w], [n*M]
            which = torch.arange(n).repeat_interleave(low_res.shape[0] // n)
            keep = (iou > config.pred_iou_thresh).nonzero().flatten().tolist() if config.pred_iou_thresh > 0 \
                else list(range(len(iou)))
            self._score_and_encode(found, low_res, iou, pts, which, keep, crop_box, crop_hw, size, config)
        if not found.rles:
            return found
        keep = batched_nms(torch.stack(found.boxes).float(), torch.tensor(found.scores),
                           torch.zeros(len(found.rles)), iou_threshold=config.box_nms_thresh).tolist()
        return _Candidates(rles=[found.rles[i] for i in keep], boxes=[found.boxes[i] for i in keep],
                           scores=[found.scores[i] for i in keep], stability=[found.stability[i] for i in keep],
                           points=[found.points[i] for i in keep])

    def _score_and_encode(self, found: _Candidates, low_res: torch.Tensor, iou: torch.Tensor, pts: torch.Tensor,
                          which: torch.Tensor, keep: list[int], crop_box: list[int], crop_hw: tuple[int, int],
                          size: tuple[int, int], config: EverythingConfig) -> None:
        """Upsample the kept masks a chunk at a time; keep the stable ones away from inner crop edges."""
        from sam2.utils import amg

        height, width = size
        chunk = max(1, _CHUNK_PIXELS // (crop_hw[0] * crop_hw[1]))
        for start in range(0, len(keep), chunk):
            idx = keep[start:start + chunk]
            logits = self._upsample(low_res[idx], crop_hw)  # [k, h, w] float32 at the crop's size
            stable = amg.calculate_stability_score(logits, self.mask_threshold, config.stability_score_offset)
            ok = (stable >= config.stability_score_thresh if config.stability_score_thresh > 0
                  else torch.ones_like(stable, dtype=torch.bool))
            masks = logits > self.mask_threshold
            boxes = amg.batched_mask_to_box(masks)
            ok &= ~amg.is_box_near_crop_edge(boxes, crop_box, [0, 0, width, height])
            chosen = ok.nonzero().flatten().tolist()
            if not chosen:
                continue
            full = amg.uncrop_masks(masks[chosen], crop_box, height, width)
            found.rles += _encode_rles(full)
            for c in chosen:
                found.boxes.append(boxes[c].cpu())
                found.scores.append(float(iou[idx[c]]))
                found.stability.append(float(stable[c]))
                x, y = pts[int(which[idx[c]])].tolist()
                found.points.append((x, y))

    # ------------------------------------------------------------------ the network
    def _encode(self, image: np.ndarray | torch.Tensor) -> _ImageFeatures:
        """sam2's image transform (to [0, 1], bilinear antialiased resize to S x S, ImageNet
        normalisation), the image encoder, and the no-memory embedding sam2 adds for single images."""
        image = torch.as_tensor(image)
        _check_image(image)
        height, width = int(image.shape[0]), int(image.shape[1])
        size = self.model.image_size
        x = image.to(self.device).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        frame = encode_images(self.model, (x - self._mean) / self._std, dtype=self.encoder_dtype)[0]
        top = frame.vision_feats  # [HW, 1, C]
        if self.model.directly_add_no_mem_embed:
            top = top + self.model.no_mem_embed
        embed = top.permute(1, 2, 0).reshape(1, -1, *frame.size)
        return _ImageFeatures(embed=embed, high_res=list(frame.high_res), height=height, width=width)

    def _decode(self, feats: _ImageFeatures, coords: torch.Tensor, labels: torch.Tensor, *, multimask: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:  # [B, M, S/4, S/4] logits, [B, M] predicted IoU
        """The prompt encoder and mask decoder on B prompts ([B, K, 2] model pixels, [B, K] labels)."""
        coords, labels = pad_points(coords, labels)
        encoder = self.model.sam_prompt_encoder
        sparse, dense = encoder(points=(coords, labels), boxes=None, masks=None)
        low_res, iou, _, _ = self.decoder(
            image_embeddings=feats.embed, image_pe=encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=multimask, repeat_image=True,
            high_res_features=feats.high_res or None)
        return low_res.float(), iou.float()

    @staticmethod
    def _upsample(low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # [M, h, w] -> [M, H, W]
        return F.interpolate(low_res[None].float(), size, mode="bilinear", align_corners=False)[0]


def _to_model_pixels(xy: torch.Tensor, feats: _ImageFeatures, size: int) -> torch.Tensor:  # [..., 2]
    """Image pixels to the model's input pixels, in sam2's order of operations (divide, then scale)."""
    return xy / torch.tensor([feats.width, feats.height], dtype=torch.float32) * size


def _check_image(image: torch.Tensor) -> None:
    if image.dim() != 3 or image.shape[2] != 3 or image.dtype != torch.uint8 or min(image.shape[:2]) < 1:
        raise ConfigError(f"image must be [H, W, 3] uint8 RGB, got {tuple(image.shape)} {image.dtype}")


def _encode_rles(masks: torch.Tensor) -> list[dict]:  # masks: [N, H, W] bool
    from engine.ops import rle_encode

    return rle_encode(masks)
