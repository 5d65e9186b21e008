"""Prompt points padded to fixed counts: the padding changes nothing the user sees, and the number of
shapes a compiled prompt path meets stays bounded however many clicks a session makes."""

from __future__ import annotations

import pytest
import torch

from engine.errors import ConfigError
from engine.track import StreamingTracker, TrackerConfig
from engine.track.prompts import POINT_BUCKETS, PaddedPromptDecoder, bucket_size, pad_points

from .conftest import CONFIG, SIZE, official_predictor, official_state
from .test_parity import LOGIT_TOL

EXACT_TOL = 1e-5  # padded vs unpadded: float summation order only (measured <= 3e-7)


@pytest.fixture(scope="module")
def model(state_dict):
    from engine.track.model import build_model

    model = build_model(CONFIG, image_size=SIZE)
    model.load_state_dict(state_dict)
    return model


@pytest.fixture(scope="module")
def features(model, clip_frames):
    """One real frame's image features, as the image path feeds them to the decoder."""
    from engine.track.image import ImageSegmenter

    feats = ImageSegmenter(model, precision="exact")._encode(clip_frames[0])
    return feats.embed, feats.high_res


def _decode(model, decoder, features, coords, labels, *, multimask: bool):
    embed, high_res = features
    encoder = model.sam_prompt_encoder
    with torch.inference_mode():
        sparse, dense = encoder(points=(coords, labels), boxes=None, masks=None)
        return decoder(image_embeddings=embed, image_pe=encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                       dense_prompt_embeddings=dense, multimask_output=multimask, repeat_image=True,
                       high_res_features=high_res)


def _clicks(count: int, *, box: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, N, 2] model-pixel coordinates and [1, N] labels: a box's two corners first, then clicks."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand((1, count, 2), generator=g) * SIZE
    labels = torch.randint(0, 2, (1, count), generator=g, dtype=torch.int32)
    labels[0, 0] = 1
    if box:
        corners = torch.tensor([[[40.0, 50.0], [200.0, 220.0]]])
        coords, labels = torch.cat([corners, coords], 1), torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), labels], 1)
    return coords, labels


@pytest.mark.parametrize("count, expected", [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 32), (64, 64)],
                         ids=lambda v: str(v))
def test_bucket_sizes(count, expected):
    assert bucket_size(count) == expected


def test_more_points_than_the_largest_bucket_is_a_config_error():
    with pytest.raises(ConfigError, match=f"at most {POINT_BUCKETS[-1]} points"):
        bucket_size(POINT_BUCKETS[-1] + 1)


def test_naive_padding_changes_the_masks(model, features):
    """Why the decoder masks padding: sam2's decoder attends to "not a point" tokens, so padding them
    in without the mask moves the masks a long way (not a float-rounding effect)."""
    coords, labels = _clicks(3, box=False)
    unpadded = _decode(model, model.sam_mask_decoder, features, coords, labels, multimask=False)
    padded = _decode(model, model.sam_mask_decoder, features, *pad_points(coords, labels), multimask=False)
    assert float((unpadded[0] - padded[0]).abs().max()) > 1e-2
    assert float((unpadded[1] - padded[1]).abs().max()) > 1e-3


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7, 12])
@pytest.mark.parametrize("box", [False, True], ids=["clicks", "box and clicks"])
@pytest.mark.parametrize("multimask", [False, True], ids=["one mask", "three masks"])
def test_padded_prompts_give_the_unpadded_outputs(model, features, count, box, multimask):
    """Every output of sam2's decoder (masks, predicted IoU, the object-pointer token, object score), for
    prompts padded up to their bucket against sam2's own decoder on the prompt as given."""
    decoder = PaddedPromptDecoder(model.sam_mask_decoder, model.sam_prompt_encoder.not_a_point_embed)
    coords, labels = _clicks(count, box=box, seed=count)
    padded_coords, padded_labels = pad_points(coords, labels)
    assert padded_coords.shape[1] == bucket_size(coords.shape[1])
    reference = _decode(model, model.sam_mask_decoder, features, coords, labels, multimask=multimask)
    ours = _decode(model, decoder, features, padded_coords, padded_labels, multimask=multimask)
    for name, a, b in zip(("masks", "iou", "token", "object score"), ours, reference):
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= EXACT_TOL, name


def test_prompts_of_different_lengths_decode_as_one_batch(model, features):
    """Padding lets prompts with different click counts share one decoder call, with each prompt's
    own result."""
    decoder = PaddedPromptDecoder(model.sam_mask_decoder, model.sam_prompt_encoder.not_a_point_embed)
    prompts = [_clicks(n, box=n % 2 == 0, seed=n) for n in (1, 2, 5)]
    width = bucket_size(max(c.shape[1] for c, _ in prompts))
    rows = []
    for coords, labels in prompts:
        extra = width - coords.shape[1]
        rows.append((torch.cat([coords, torch.zeros(1, extra, 2)], 1),
                     torch.cat([labels, torch.full((1, extra), -1, dtype=torch.int32)], 1)))
    batch = _decode(model, decoder, features, torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows]),
                    multimask=False)
    for i, (coords, labels) in enumerate(prompts):
        alone = _decode(model, model.sam_mask_decoder, features, coords, labels, multimask=False)
        assert float((batch[0][i] - alone[0][0]).abs().max()) <= EXACT_TOL


@pytest.mark.slow
def test_a_compiled_prompt_path_compiles_once_per_bucket(model, features):
    """torch.compile with static shapes: sixteen click counts compile five graphs when padded (buckets
    1, 2, 4, 8, 16); unpadded, every new count compiles again."""
    graphs: list = []

    def counting_backend(gm, example_inputs):  # dynamo calls this once per graph it compiles
        graphs.append(gm)
        return gm.forward

    def decode(coords, labels, decoder):
        return _decode(model, decoder, features, coords, labels, multimask=False)

    padded_decoder = PaddedPromptDecoder(model.sam_mask_decoder, model.sam_prompt_encoder.not_a_point_embed)
    torch._dynamo.reset()
    compiled = torch.compile(decode, backend=counting_backend, dynamic=False)
    for count in range(1, 17):
        compiled(*pad_points(*_clicks(count, box=False)), padded_decoder)
    padded = len(graphs)
    graphs.clear()
    torch._dynamo.reset()
    compiled = torch.compile(decode, backend=counting_backend, dynamic=False)
    for count in range(1, 4):
        compiled(*_clicks(count, box=False), model.sam_mask_decoder)
    torch._dynamo.reset()
    assert padded == 5
    assert len(graphs) == 3


def test_tracker_point_prompts_meet_a_bounded_set_of_shapes(model, clip_frames):
    """A user clicking 1 to 20 times on an object (box included from 9 on): the tracker's decoder sees
    one prompt shape per bucket."""
    tracker = StreamingTracker(model, options=TrackerConfig(image_size=SIZE))
    shapes: set[tuple[int, ...]] = set()
    hook = tracker._prompt_heads.decoder.register_forward_pre_hook(
        lambda _module, args, kwargs: shapes.add(tuple(kwargs["sparse_prompt_embeddings"].shape)),
        with_kwargs=True)
    try:
        tracker.step(clip_frames[0])
        for count in range(1, 21):
            coords, labels = _clicks(count, box=False, seed=count)
            tracker.add_object(1, points=coords[0].tolist(), labels=labels[0].tolist(),
                               box=[40, 50, 200, 220] if count >= 9 else None)
    finally:
        hook.remove()
    # sam2 appends one not-a-point token to each prompt: bucket + 1 tokens
    assert {s[1] for s in shapes} == {b + 1 for b in (1, 2, 4, 8, 16, 32)}


def test_tracker_point_prompts_match_the_official_predictor(state_dict, clip_frames):
    """Three clicks (padded to four) on frame 0, then 8 frames of propagation: the official
    SAM2VideoPredictor with the same clicks gives the same logits."""
    from engine.track.model import build_model

    frames = clip_frames[:16]  # the shortest clip whose pointer scaling matches a stream's (test_parity)
    points, labels = [[60.0, 150.0], [180.0, 80.0], [90.0, 200.0]], [1, 0, 1]
    predictor = official_predictor(state_dict)
    reference = {}
    with torch.inference_mode():
        state = official_state(predictor, frames)
        predictor.add_new_points_or_box(state, 0, 1, points=points, labels=labels)
        for index, _, _masks in predictor.propagate_in_video(state, max_frame_num_to_track=8):
            out = state["output_dict_per_obj"][0]
            entry = out["cond_frame_outputs"].get(index) or out["non_cond_frame_outputs"].get(index)
            reference[index] = entry["pred_masks"][0, 0]
    model = build_model(CONFIG, image_size=SIZE)
    model.load_state_dict(state_dict)
    tracker = StreamingTracker(model, options=TrackerConfig(image_size=SIZE, evict=False, reprompt_as_cond=False,
                                                           precision="exact"))
    ours = {}
    for index in range(9):
        tracks = tracker.step(frames[index])
        if index == 0:
            tracks = tracker.add_object(1, points=points, labels=labels)
        ours[index] = tracks.logits[0]
    worst = max(float((ours[i] - reference[i]).abs().max()) for i in reference)
    assert sorted(ours) == sorted(reference)
    assert worst <= LOGIT_TOL


@pytest.mark.parametrize("prompt, words", [
    ({"points": [[5.0, float("nan")]], "labels": [1]}, "finite"),
    ({"points": [[float(i), float(i)] for i in range(65)], "labels": [1] * 65}, "at most 64 points"),
    ({"points": [[5.0, 5.0]] * 63, "labels": [1] * 63, "box": [0, 0, 10, 10]}, "a box counts as 2"),
], ids=["NaN point", "65 points", "63 points and a box"])
def test_tracker_prompts_that_cannot_be_decoded_are_refused_before_any_work(model, clip_frames, prompt, words):
    tracker = StreamingTracker(model, options=TrackerConfig(image_size=SIZE))
    tracker.step(clip_frames[0])
    with pytest.raises(ConfigError, match=words):
        tracker.add_object(1, **prompt)
    assert tracker.object_ids == []
