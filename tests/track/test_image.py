"""Still images: parity with sam2's own ``SAM2ImagePredictor`` and ``SAM2AutomaticMaskGenerator``, built by
sam2's ``build_sam2`` with the same weights, on the two real stills at their full resolution.

Making the comparison mean something on random weights. Their low-res logits sit in about [-0.15, 0.3]
and move by ~0.1 between prompts; at sam2's mask threshold 0 most masks cover 60-95 % of the image, so a
mask IoU alone would pass for many wrong paths. So:
- the low-res logits are compared to LOGIT_TOL (measured differences: up to 5e-7, float summation order
  of the batched, padded decode against sam2's one-prompt-at-a-time decode);
- both sides threshold at MASK_THRESHOLD, the median logit, so masks are partial and their IoU shows
  where they differ (sam2's predictor and generator both take a mask_threshold);
- prompts are padded here (3 points to 4, a box and 3 points to 8): a padding that leaked into the
  decoder would move logits by ~0.1 (tests/track/test_prompts.py), 4 orders above the tolerance;
- the automatic generator's filters are set where they cut (predicted IoU and stability thresholds at
  about their medians), with box NMS off in one case so every surviving mask and its order is compared,
  and at sam2's 0.7 in another.
sam2's image predictor hard-codes the backbone's feature sizes for image size 1024 (``_bb_feat_sizes``);
at 256 the reference is given the model's real sizes, the only change made to it. One test runs both at
1024 with the reference untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

from engine.track.image import EverythingConfig, ImagePrompt, ImageSegmenter
from engine.track.model import build_model

from .conftest import CONFIG, SIZE

LOGIT_TOL = 1e-5  # 20x the largest float-order difference measured, 1e-4 x a padding leak
SCORE_TOL = 1e-4  # predicted IoU and stability scores
MASK_THRESHOLD = 0.08  # about the median low-res logit of these weights on both images
IMAGES = ("cars.jpg", "truck.jpg")

# Prompts in each image's own pixels (cars 2250x1500, truck 1800x1200): both images hold a vehicle there.
PROMPTS = [
    ImagePrompt(points=((600.0, 700.0),), labels=(1,)),  # one click: sam2 pads it with one not-a-point
    ImagePrompt(points=((600.0, 700.0), (1500.0, 400.0), (300.0, 1000.0)), labels=(1, 0, 1)),  # padded to 4
    ImagePrompt(box=(100.0, 300.0, 1600.0, 1100.0)),  # two corner tokens: no padding
    ImagePrompt(points=((600.0, 700.0), (1500.0, 400.0), (900.0, 900.0)), labels=(1, 0, 1),
                box=(100.0, 300.0, 1600.0, 1100.0)),  # five tokens, padded to 8
]


def _reference_model(state: dict, size: int = SIZE):
    from sam2.build_sam import build_sam2

    model = build_sam2(CONFIG, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={size}"])
    model.load_state_dict(state)
    return model


def _feature_sizes(size: int) -> list[tuple[int, int]]:
    return [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]


def _image(media_dir, name: str) -> np.ndarray:
    from engine.cli.segment import read_image

    return read_image(media_dir / name)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


@pytest.fixture(scope="module")
def segmenter(state_dict) -> ImageSegmenter:
    model = build_model(CONFIG, image_size=SIZE)
    model.load_state_dict(state_dict)
    return ImageSegmenter(model, precision="exact", mask_threshold=MASK_THRESHOLD)


@pytest.fixture(scope="module")
def reference(state_dict):
    return _reference_model(state_dict)


def _reference_predict(predictor, prompt: ImagePrompt, multimask: bool):
    kwargs = {"multimask_output": multimask}
    if prompt.points:
        kwargs.update(point_coords=np.array(prompt.points), point_labels=np.array(prompt.labels))
    if prompt.box is not None:
        kwargs["box"] = np.array(prompt.box)
    with torch.inference_mode():
        return predictor.predict(**kwargs)


def _compare_prompted(ours, predictor, prompts, multimask: bool) -> tuple[float, float, float]:
    """(worst mask IoU, worst score difference, worst low-res logit difference) over every mask."""
    worst_iou, worst_score, worst_logit = 1.0, 0.0, 0.0
    for prompt, masks in zip(prompts, ours):
        ref_masks, ref_scores, ref_logits = _reference_predict(predictor, prompt, multimask)
        assert len(masks) == len(ref_masks) == (3 if multimask else 1)
        for m, mask in enumerate(masks):
            worst_iou = min(worst_iou, _iou(mask.decode(), ref_masks[m] > 0))
            worst_score = max(worst_score, abs(mask.score - float(ref_scores[m])))
            worst_logit = max(worst_logit, float((mask.logits - torch.from_numpy(ref_logits[m])).abs().max()))
    return worst_iou, worst_score, worst_logit


@pytest.mark.parametrize("name", IMAGES)
def test_prompted_masks_match_sam2_image_predictor(segmenter, reference, media_dir, name):
    """Points, a box, and both, single and multimask; all four prompts decode as one padded batch here,
    one at a time in sam2."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    image = _image(media_dir, name)
    predictor = SAM2ImagePredictor(reference, mask_threshold=MASK_THRESHOLD)
    predictor._bb_feat_sizes = _feature_sizes(SIZE)
    with torch.inference_mode():
        predictor.set_image(image)
    segmenter.set_image(image)
    for multimask in (False, True):
        ours = segmenter.predict(PROMPTS, multimask=multimask)
        iou, score, logit = _compare_prompted(ours, predictor, PROMPTS, multimask)
        assert iou >= 0.99 and score <= SCORE_TOL and logit <= LOGIT_TOL, (multimask, iou, score, logit)
    fractions = [m.decode().mean() for masks in ours for m in masks]
    assert 0.01 < min(fractions) and max(fractions) < 0.95  # the threshold leaves masks partial


# name, generator settings: filters at about the median of their scores on these weights
EVERYTHING = [
    ("no NMS: every surviving mask, in order",
     {"points_per_side": 3, "points_per_batch": 4, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.15,
      "stability_score_offset": 0.05, "box_nms_thresh": 1.0}),
    ("sam2's NMS", {"points_per_side": 2, "points_per_batch": 4, "pred_iou_thresh": 0.5, "box_nms_thresh": 0.7,
                    "stability_score_thresh": 0.0}),
]


def _compare_everything(ours, ref) -> None:
    assert len(ours) == len(ref) > 0
    for a, b in zip(ours, ref):
        assert a.prompt.points[0] == pytest.approx(tuple(b["point_coords"][0]), abs=1e-3)
        seg = b["segmentation"]
        iou = mask_util.iou([{"size": a.rle["size"], "counts": a.rle["counts"].encode()}],
                            [{"size": seg["size"], "counts": seg["counts"].encode()}], [0])[0][0]
        assert iou >= 0.99
        assert abs(a.score - b["predicted_iou"]) <= SCORE_TOL
        assert abs(a.stability - b["stability_score"]) <= SCORE_TOL


def _reference_everything(reference, image, settings: dict, size: int = SIZE) -> list[dict]:
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(reference, output_mode="coco_rle", mask_threshold=MASK_THRESHOLD,
                                           **settings)
    generator.predictor._bb_feat_sizes = _feature_sizes(size)
    with torch.inference_mode():
        return generator.generate(image)


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("settings", [e[1] for e in EVERYTHING], ids=[e[0] for e in EVERYTHING])
def test_everything_matches_sam2_automatic_mask_generator(segmenter, reference, media_dir, name, settings):
    image = _image(media_dir, name)
    ours = segmenter.generate(image, EverythingConfig(**settings))
    ref = _reference_everything(reference, image, settings)
    _compare_everything(ours, ref)
    if settings["box_nms_thresh"] == 1.0:
        assert len(ours) >= 4  # the filters left a real list to compare


@pytest.mark.slow
def test_everything_on_a_crop_layer_matches(segmenter, reference, media_dir):
    """The image and its four overlapping crops (five encoder passes), NMS within and between crops."""
    image = _image(media_dir, "cars.jpg")
    settings = {"points_per_side": 2, "points_per_batch": 4, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.5,
                "stability_score_offset": 0.05, "box_nms_thresh": 1.0, "crop_n_layers": 1, "crop_nms_thresh": 1.0}
    ours = segmenter.generate(image, EverythingConfig(**settings))
    _compare_everything(ours, _reference_everything(reference, image, settings))


def test_everything_with_nothing_left_after_filtering_is_an_empty_list(segmenter, media_dir):
    """(sam2's generator raises IndexError here once crops are on.)"""
    image = _image(media_dir, "truck.jpg")[:300, :400]
    config = EverythingConfig(points_per_side=1, pred_iou_thresh=0.99, crop_n_layers=1)
    assert segmenter.generate(image, config) == []


@pytest.mark.slow
def test_at_1024_the_unmodified_sam2_image_predictor_agrees(state_dict, media_dir):
    """The model's trained size, where sam2's hard-coded feature sizes hold: no change to the reference."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model = build_model(CONFIG, image_size=1024, seed=0)
    state = model.state_dict()
    ours = ImageSegmenter(model, precision="exact", mask_threshold=MASK_THRESHOLD)
    predictor = SAM2ImagePredictor(_reference_model(state, 1024), mask_threshold=MASK_THRESHOLD)
    image = _image(media_dir, "truck.jpg")
    with torch.inference_mode():
        predictor.set_image(image)
    ours.set_image(image)
    prompts = PROMPTS[1:2]
    iou, score, logit = _compare_prompted(ours.predict(prompts), predictor, prompts, False)
    assert iou >= 0.99 and score <= SCORE_TOL and logit <= LOGIT_TOL, (iou, score, logit)


def test_a_checkpoint_file_loads_the_weights_sam2_loads(tmp_path, media_dir):
    """A user's path: an official-format file ({"model": state_dict}, as Meta ships them), not flagged
    random, read by ImageSegmenter.load and by sam2's own build_sam2(ckpt_path=...). Seed 1 weights, so
    a loader that silently kept the seed-0 random initialisation would not match."""
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    state = build_model(CONFIG, image_size=SIZE, seed=1).state_dict()
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state}, path)
    ours = ImageSegmenter.load("sam2.1_hiera_t", weights=path, image_size=SIZE, precision="exact",
                                mask_threshold=MASK_THRESHOLD)
    random0 = ImageSegmenter.load("sam2.1_hiera_t", weights="random", image_size=SIZE, seed=0,
                                  mask_threshold=MASK_THRESHOLD)
    reference = build_sam2(CONFIG, str(path), device="cpu", hydra_overrides_extra=[f"++model.image_size={SIZE}"])
    predictor = SAM2ImagePredictor(reference, mask_threshold=MASK_THRESHOLD)
    predictor._bb_feat_sizes = _feature_sizes(SIZE)
    image = _image(media_dir, "cars.jpg")[::4, ::4].copy()  # 563x375: the loader is what is tested here
    with torch.inference_mode():
        predictor.set_image(image)
    prompts = [ImagePrompt(points=((150.0, 175.0),), labels=(1,))]
    ours.set_image(image)
    random0.set_image(image)
    iou, score, logit = _compare_prompted(ours.predict(prompts), predictor, prompts, False)
    assert iou >= 0.99 and score <= SCORE_TOL and logit <= LOGIT_TOL
    other = random0.predict(prompts)[0][0]
    assert abs(other.score - ours.predict(prompts)[0][0].score) > 100 * SCORE_TOL  # the file's weights, not seed 0


def test_everything_decodes_grid_batches_in_a_few_shapes(segmenter, media_dir):
    """Short batches of grid points are padded to a power of two (at most points_per_batch), so a
    compiled decoder meets a bounded set of shapes; the padding's results are dropped."""
    image = _image(media_dir, "truck.jpg")[::8, ::8].copy()
    batches: list[int] = []
    hook = segmenter.decoder.register_forward_pre_hook(
        lambda _m, args, kwargs: batches.append(kwargs["sparse_prompt_embeddings"].shape[0]), with_kwargs=True)
    try:
        for side in (1, 2, 3, 5):  # 1, 4, 9 and 25 grid points
            masks = segmenter.generate(image, EverythingConfig(points_per_side=side, points_per_batch=16,
                                                               pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                                               box_nms_thresh=1.0))
            assert len(masks) == side * side * 3  # nothing filtered: one result per real point and token
    finally:
        hook.remove()
    assert set(batches) == {1, 4, 16}
