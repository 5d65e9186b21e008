"""Boundary refinement of a frame's final masks: pull mask edges onto the picture's edges.

Both methods treat the frame's instances as one labelling (background plus one label per instance), so
the refined masks still never overlap, and each instance keeps its id, class and score:

- ``crf``: a fully connected CRF (Krähenbühl & Koltun, "Efficient Inference in Fully Connected CRFs with
  Gaussian Edge Potentials", NeurIPS 2011) through ``pydensecrf`` (the ``pydensecrf2`` package): unary
  terms from the engine's labels (``gt_prob`` confidence), a smoothness kernel and an appearance kernel
  that couples pixels of similar colour, mean-field inference. Accurate and slow.
- ``guided``: OpenCV's guided filter (He, Sun & Tang, "Guided Image Filtering", TPAMI 2013;
  ``cv2.ximgproc.guidedFilter`` from opencv-contrib) on each label's indicator map with the frame as
  guide, then the most likely label per pixel. Linear time in pixels per label: fast enough for live use.
- ``none``: the masks as they are.

In the engine it is the ``refine`` stage (``streamseg run --refine crf|guided``): ``BoundaryRefiner`` on
every frame's resolved instances, before the panoptic resolution and the sinks. Costs and what each buys
are in benchmarks/RESULTS.md (``python -m benchmarks.refine``; the closed loop's held-out scenes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from engine.errors import BackendError, ConfigError
from engine.types import Instances

REFINE_METHODS = ("none", "crf", "guided")


@dataclass(frozen=True, slots=True)
class CrfConfig:
    """Dense CRF parameters; defaults are those of the pydensecrf README's example (the paper's)."""

    iterations: int = 5  # mean-field steps: the labelling settles within about five
    gt_prob: float = 0.7  # how sure the engine's labels are: lower lets the picture move edges farther
    sxy_gaussian: float = 3.0  # smoothness kernel width (px): removes isolated pixels
    compat_gaussian: float = 3.0
    sxy_bilateral: float = 80.0  # appearance kernel: pixels this far apart (px) ...
    srgb_bilateral: float = 13.0  # ... and this close in colour (0-255) tend to share a label
    compat_bilateral: float = 10.0

    def __post_init__(self) -> None:
        if self.iterations < 1 or not 0.0 < self.gt_prob < 1.0:
            raise ConfigError(f"crf iterations must be >= 1 and gt_prob in (0, 1), got {self.iterations}, "
                              f"{self.gt_prob}")


@dataclass(frozen=True, slots=True)
class GuidedConfig:
    """Guided filter parameters, in the units of a uint8 guide."""

    radius: int = 4  # window radius (px): how far an edge can pull a mask boundary
    eps: float = (0.1 * 255) ** 2  # regularisation: edges weaker than ~10% of the range are smoothed over

    def __post_init__(self) -> None:
        if self.radius < 1 or self.eps <= 0:
            raise ConfigError(f"guided radius must be >= 1 and eps > 0, got {self.radius}, {self.eps}")


def refine_masks(image: np.ndarray,  # [H, W, 3] uint8 RGB
                 masks: np.ndarray,  # [N, H, W] bool, not overlapping
                 method: str, *, crf: CrfConfig = CrfConfig(),
                 guided: GuidedConfig = GuidedConfig()) -> np.ndarray:  # -> [N, H, W] bool, not overlapping
    """Refined masks, in the same order. Raises ConfigError for an unknown method and BackendError when
    its library is missing."""
    _check_method(method)
    if masks.ndim != 3 or image.shape != (*masks.shape[1:], 3) or image.dtype != np.uint8:
        raise ValueError(f"refine_masks needs a [H, W, 3] uint8 image and [N, H, W] masks, got "
                         f"{image.shape} {image.dtype} and {masks.shape}")
    if method == "none" or len(masks) == 0:
        return masks.astype(bool, copy=True)
    labels = label_map(masks)
    if method == "crf":
        refined = _crf(image, labels, len(masks) + 1, crf)
    else:
        refined = _guided(image, labels, len(masks) + 1, guided)
    return refined[None] == np.arange(1, len(masks) + 1)[:, None, None]


@dataclass(frozen=True, slots=True)
class BoundaryRefiner:
    """The engine's refine stage (``engine.interfaces.Refiner``): ``refine_instances`` with one method and
    its parameters. Built before the first frame, so a missing library is a BackendError then, naming the
    package to install; ``method`` "none" is a ConfigError here (no refiner is the pipeline's "none")."""

    method: str
    crf: CrfConfig = CrfConfig()
    guided: GuidedConfig = GuidedConfig()

    def __post_init__(self) -> None:
        if self.method not in REFINE_METHODS or self.method == "none":
            raise ConfigError(f"refine method {self.method!r}: a refiner runs one of "
                              f"{', '.join(m for m in REFINE_METHODS if m != 'none')}")
        _LIBRARIES[self.method]()

    def __call__(self, image: torch.Tensor, instances: Instances) -> Instances:
        """``image``: [H, W, 3] uint8 RGB, any device; the instances' masks at its size."""
        return refine_instances(image, instances, self.method, crf=self.crf, guided=self.guided)


def load_refiner(method: str) -> BoundaryRefiner | None:
    """``--refine``: None for "none", else a ``BoundaryRefiner``; ConfigError naming the choices for any
    other name, BackendError when the method's library is missing."""
    _check_method(method)
    return None if method == "none" else BoundaryRefiner(method)


def _check_method(method: str) -> None:
    if method not in REFINE_METHODS:
        raise ConfigError(f"--refine {method!r}: choose one of {', '.join(REFINE_METHODS)}")


def refine_instances(image: torch.Tensor, instances: Instances, method: str, **configs) -> Instances:
    """``refine_masks`` on a frame's final instances ([H, W, 3] uint8 image); boxes follow the new masks."""
    if method == "none" or len(instances) == 0:
        return instances
    from engine.ops import mask_boxes

    refined = refine_masks(image.cpu().numpy(), instances.masks.cpu().numpy(), method, **configs)
    masks = torch.from_numpy(refined).to(instances.masks.device)
    return replace(instances, masks=masks, boxes=mask_boxes(masks).to(instances.boxes.dtype))


def label_map(masks: np.ndarray) -> np.ndarray:  # [N, H, W] bool -> [H, W] int32: 0 background, i + 1 mask i
    labels = np.zeros(masks.shape[1:], dtype=np.int32)
    for i, mask in enumerate(masks):
        labels[mask] = i + 1
    return labels


def _densecrf():
    """pydensecrf's CRF class and unary helper; BackendError naming the package when it is missing."""
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_labels
    except ImportError:
        raise BackendError("--refine crf needs pydensecrf: pip install pydensecrf2 (or the 'data' extra)") from None
    return dcrf, unary_from_labels


def _ximgproc():
    """OpenCV with its contrib modules; BackendError naming the package when they are missing."""
    import cv2

    if not hasattr(cv2, "ximgproc"):
        raise BackendError("--refine guided needs OpenCV's contrib modules: pip install "
                           f"opencv-contrib-python-headless=={cv2.__version__} (or the 'data' extra)")
    return cv2


_LIBRARIES = {"crf": _densecrf, "guided": _ximgproc}


def _crf(image: np.ndarray, labels: np.ndarray, count: int, cfg: CrfConfig) -> np.ndarray:
    dcrf, unary_from_labels = _densecrf()
    height, width = labels.shape
    crf = dcrf.DenseCRF2D(width, height, count)
    crf.setUnaryEnergy(unary_from_labels(labels, count, gt_prob=cfg.gt_prob, zero_unsure=False))
    crf.addPairwiseGaussian(sxy=cfg.sxy_gaussian, compat=cfg.compat_gaussian)
    crf.addPairwiseBilateral(sxy=cfg.sxy_bilateral, srgb=cfg.srgb_bilateral, rgbim=np.ascontiguousarray(image),
                             compat=cfg.compat_bilateral)
    q = np.array(crf.inference(cfg.iterations)).reshape(count, height, width)
    return q.argmax(0)


def _guided(image: np.ndarray, labels: np.ndarray, count: int, cfg: GuidedConfig) -> np.ndarray:
    cv2 = _ximgproc()
    flt = cv2.ximgproc.createGuidedFilter(np.ascontiguousarray(image), cfg.radius, cfg.eps)
    scores = np.stack([flt.filter((labels == k).astype(np.float32)) for k in range(count)])
    return scores.argmax(0)
