"""SAM 2 fine-tuning at 256 px on a tiny collection: it learns, resumes exactly, and writes a checkpoint the
tracker loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data.finetune.sam2 import Sam2Options, finetune_sam2
from engine.data.finetune.sam2_views import augment, preprocess

REPO = Path(__file__).resolve().parents[2]


def _options(collection: Path, out: Path, weights: Path | str, **kw) -> Sam2Options:
    base = {"data": collection, "out": out, "weights": str(weights), "image_size": 256, "steps": 20, "batch": 4, "lr": 1e-3,
                "views": 2, "save_every": 4, "progress": False}
    return Sam2Options(**{**base, **kw})


@pytest.fixture(scope="module")
def tuned(labelled_collection, sam2_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("sam2") / "tuned.pt"
    return finetune_sam2(_options(labelled_collection, out, sam2_weights), log=lambda line: None)


def test_a_tiny_fine_tune_lowers_the_loss_and_raises_iou_on_its_training_frames(tuned):
    losses = tuned.losses
    assert len(losses) == 20
    assert np.mean(losses[-4:]) < np.mean(losses[:3]) - 0.3, losses
    # random weights segment nothing (IoU ~0.01); twenty steps make boxes give masks
    assert tuned.after["iou_train"] > tuned.before["iou_train"] + 0.1, (tuned.before, tuned.after)
    assert "iou_held_out" in tuned.after
    for name in ("loss.png", "report.json", "report.md", "state.pt"):
        assert (tuned.run_dir / name).is_file()
    report = json.loads((tuned.run_dir / "report.json").read_text())
    assert report["after"]["iou_train"] == pytest.approx(tuned.after["iou_train"])


def test_the_checkpoint_loads_as_tracker_weights(tuned, sam2_weights, labelled_collection):
    from engine.data.dataset import read_collection
    from engine.track import load_tracker

    tracker = load_tracker("sam2.1_hiera_t", weights=tuned.checkpoint, image_size=256)
    state = torch.load(tuned.checkpoint, weights_only=True)["model"]
    start = torch.load(sam2_weights, weights_only=True)["model"]
    for key, value in tracker.model.state_dict().items():
        assert torch.equal(value.cpu(), state[key])
        trained = key.startswith(("sam_mask_decoder", "sam_prompt_encoder")) and not key.startswith(
            ("sam_mask_decoder.conv_s0", "sam_mask_decoder.conv_s1"))
        if not trained:
            assert torch.equal(value.cpu(), start[key]), key  # the frozen parts are the starting weights
    sample = read_collection(labelled_collection).samples[0]
    tracker.step(sample.read_image())
    mask = sample.masks()[0]
    ys, xs = np.nonzero(mask)
    tracks = tracker.add_object(1, box=[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    got = tracks.masks[0].numpy()
    assert (got & mask).sum() / (got | mask).sum() > 0.2  # the tuned decoder segments from a box


@pytest.mark.slow  # three fine-tunes, each building SAM 2
def test_a_resumed_fine_tune_ends_with_the_same_weights(labelled_collection, sam2_weights, tmp_path):
    straight = finetune_sam2(_options(labelled_collection, tmp_path / "a.pt", sam2_weights, steps=6, save_every=3),
                             log=lambda line: None)
    first = finetune_sam2(_options(labelled_collection, tmp_path / "b.pt", sam2_weights, steps=3, save_every=3),
                          log=lambda line: None)
    lines = []
    resumed = finetune_sam2(_options(labelled_collection, tmp_path / "b.pt", sam2_weights, steps=6, save_every=3),
                            log=lines.append)
    assert resumed.resumed_from == 3 and any("resuming from step 3" in line for line in lines)
    assert resumed.losses[:3] == first.losses
    assert resumed.losses == straight.losses  # same seed, same draws, same steps: bit for bit
    a = torch.load(tmp_path / "a.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # two fine-tunes
def test_another_seed_draws_other_batches(labelled_collection, sam2_weights, tmp_path):
    one = finetune_sam2(_options(labelled_collection, tmp_path / "a.pt", sam2_weights, steps=2), log=lambda _: None)
    two = finetune_sam2(_options(labelled_collection, tmp_path / "b.pt", sam2_weights, steps=2, seed=1),
                        log=lambda _: None)
    assert one.losses != two.losses


@pytest.mark.slow  # three fine-tunes
def test_other_settings_in_the_run_folder_are_refused(labelled_collection, sam2_weights, tmp_path):
    from engine.errors import ConfigError

    finetune_sam2(_options(labelled_collection, tmp_path / "a.pt", sam2_weights, steps=1), log=lambda _: None)
    with pytest.raises(ConfigError, match="other settings.*lr"):
        finetune_sam2(_options(labelled_collection, tmp_path / "a.pt", sam2_weights, steps=2, lr=5e-4),
                      log=lambda _: None)
    restarted = finetune_sam2(_options(labelled_collection, tmp_path / "a.pt", sam2_weights, steps=1, lr=5e-4,
                                       restart=True), log=lambda _: None)
    assert restarted.resumed_from == 0


def test_preprocessing_matches_the_tracker():
    from engine.track.tracker import StreamingTracker

    class _Model:  # what StreamingTracker._preprocess reads
        image_size = 64
        device = torch.device("cpu")

    image = np.random.default_rng(0).integers(0, 256, size=(48, 80, 3), dtype=np.uint8)
    tracker = StreamingTracker.__new__(StreamingTracker)
    tracker.model, tracker.device = _Model(), torch.device("cpu")
    tracker._mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    tracker._std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    expected, _, _ = tracker._preprocess(image)
    assert torch.equal(preprocess(image, 64), expected)


def test_augmentation_moves_image_and_masks_together():
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    image[10:30, 20:50] = 255
    mask = image[None, :, :, 0] > 0
    for seed in range(8):
        moved_image, moved_masks = augment(image, mask, seed=seed)
        bright = moved_image.max(2) > 128  # noise and colour jitter do not turn black into white
        agree = (bright == moved_masks[0]).mean()
        assert agree > 0.98, (seed, agree)
    a, b = augment(image, mask, seed=3), augment(image, mask, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])  # seeded: the same view every run


@pytest.mark.slow  # two CLI processes, each building SAM 2 (~30 s on 2 loaded cores)
@pytest.mark.timeout(900)  # two processes with their own time limits; margin for a loaded machine
def test_a_killed_fine_tune_resumes_from_its_last_save(labelled_collection, sam2_weights, tmp_path):
    out = tmp_path / "killed.pt"
    command = [sys.executable, "-m", "engine", "finetune", "sam2", "--data", str(labelled_collection), "--out",
               str(out), "--weights", str(sam2_weights), "--image-size", "256", "--steps", "400", "--batch", "2",
               "--views", "1", "--lr", "1e-3", "--save-every", "2", "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    state = out.with_name(out.name + ".run") / "state.pt"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not state.exists():
            time.sleep(0.1)
        assert state.exists(), proc.stderr.read() if proc.poll() is not None else "no save in 240 s"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    saved = torch.load(state, weights_only=True)["step"]
    again = replace_arg(command, "--steps", str(saved + 2))
    done = subprocess.run(again, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert f"resuming from step {saved}" in done.stderr
    report = json.loads((out.with_name(out.name + ".run") / "report.json").read_text())
    assert report["resumed_from"] == saved and report["steps"] == saved + 2 and out.is_file()


def replace_arg(command: list[str], flag: str, value: str) -> list[str]:
    out = list(command)
    out[out.index(flag) + 1] = value
    return out


def test_options_are_checked():
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="multiple of 32"):
        Sam2Options(data=Path("."), out=Path("x.pt"), weights="random", image_size=100)
    with pytest.raises(ConfigError, match="--batch"):
        replace(Sam2Options(data=Path("."), out=Path("x.pt"), weights="random"), batch=0)
    with pytest.raises(ConfigError, match="memory_truth"):
        replace(Sam2Options(data=Path("."), out=Path("x.pt"), weights="random"), memory_truth=1.5)
    with pytest.raises(ConfigError, match="memory_from"):
        replace(Sam2Options(data=Path("."), out=Path("x.pt"), weights="random"), memory_from=-1)


def test_the_memory_path_joins_after_memory_from_steps(labelled_collection, sam2_weights, tmp_path):
    # memory_from == steps: only the prompt path trains; the memory modules keep their weights exactly
    result = finetune_sam2(_options(labelled_collection, tmp_path / "m.pt", sam2_weights, steps=4, box_prompts=1.0,
                                    train_memory=True, memory_from=4), log=lambda line: None)
    tuned = torch.load(result.checkpoint, weights_only=True)["model"]
    start = torch.load(sam2_weights, weights_only=True)["model"]
    moved = {key.split(".")[0] for key in start if not torch.equal(tuned[key], start[key])}
    assert "sam_mask_decoder" in moved
    assert not moved & {"memory_attention", "memory_encoder", "obj_ptr_proj", "maskmem_tpos_enc"}, moved


def test_training_the_memory_path_moves_it_and_leaves_the_encoder_frozen(labelled_collection, sam2_weights, tmp_path):
    result = finetune_sam2(_options(labelled_collection, tmp_path / "m.pt", sam2_weights, steps=12, box_prompts=1.0,
                                    train_memory=True), log=lambda line: None)
    assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3]), result.losses
    tuned = torch.load(result.checkpoint, weights_only=True)["model"]
    start = torch.load(sam2_weights, weights_only=True)["model"]
    moved = {key.split(".")[0] for key in start if not torch.equal(tuned[key], start[key])}
    assert {"memory_attention", "memory_encoder", "obj_ptr_proj", "maskmem_tpos_enc", "sam_mask_decoder"} <= moved
    assert "image_encoder" not in moved and "no_mem_embed" not in moved  # what the cached features hold
    state = torch.load(result.run_dir / "state.pt", weights_only=True)
    assert "param.maskmem_tpos_enc" in state["trainable"]  # a resumed run restores the bare parameters too


def test_training_the_memory_path_needs_a_motion_view(labelled_collection, sam2_weights, tmp_path):
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="one motion view"):
        finetune_sam2(_options(labelled_collection, tmp_path / "m.pt", sam2_weights, motion_views=0,
                               train_memory=True), log=lambda line: None)


def test_pseudo_videos_draw_the_objects_one_frame_pair_shares_together():
    # The memory is what tells neighbours apart only when they share the batch: a batch of one object per
    # image can be met by segmenting each image's most salient object, the collapse to one mask per track
    from types import SimpleNamespace

    from engine.data.finetune.sam2_memory import PseudoVideo

    video = PseudoVideo.__new__(PseudoVideo)
    video.task = SimpleNamespace(train_samples=["s0", "s1", "s2"],
                                 cache=SimpleNamespace(get=lambda sample, v, motion: (sample, v)))
    # four objects in every frame pair of three images; object k is row k of frame A and row k + 10 of B
    video.groups = [(s, a, b, [(k, k + 10) for k in range(4)]) for s in range(3) for a, b in ((0, 1), (1, 0))]
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        frames_a, frames_b = video._draw(6, generator)
        assert len(frames_a) == len(frames_b) == 6
        first = frames_a[:4]  # the first pair drawn gives all four of its objects
        assert len({view for view, _ in first}) == 1 and sorted(row for _, row in first) == [0, 1, 2, 3]
        for (view_a, row_a), (view_b, row_b) in zip(frames_a, frames_b):
            assert view_a[0] == view_b[0] and view_a[1] != view_b[1] and row_b == row_a + 10  # one object, two frames


def test_motion_views_move_objects_as_a_video_frame_does():
    # A pseudo-video's second frame: the object a few pixels away, never mirrored or thrown across the
    # picture as the training views may (a flip sends this box to the right half)
    image = np.zeros((240, 320, 3), dtype=np.uint8)
    image[40:90, 30:100] = 255
    mask = image[None, :, :, 0] > 0
    centre = np.argwhere(mask[0]).mean(0)
    for seed in range(16):
        moved_image, moved = augment(image, mask, seed=seed, motion=True)
        shift = np.abs(np.argwhere(moved[0]).mean(0) - centre)
        # a 5 % shift, plus 5 % scale and 5 degrees about the centre for a box ~110 px from it
        assert shift[0] <= 0.12 * 240 and shift[1] <= 0.12 * 320, (seed, shift)
        assert ((moved_image.max(2) > 128) == moved[0]).mean() > 0.98, seed


@pytest.mark.parametrize("prior", [False, True], ids=["random", "with_locality_prior"])
def test_the_locality_prior_makes_memory_attention_read_the_same_place(prior):
    # A memory that differs from another in one cell changes the attention's output at that cell most
    # with the prior; with random weights the change spreads evenly (the cell's share is about 1/256)
    from engine.data.finetune.sam2_memory import locality_prior
    from engine.track.model import build_model

    model = build_model("sam2.1_hiera_t", image_size=256, seed=0)
    if prior:
        assert locality_prior(model) == 4  # every layer of hiera-t's memory attention
    attention = model.memory_attention
    g = torch.Generator().manual_seed(0)
    side, cell = 16, 5 * 16 + 9
    curr = torch.randn(side * side, 1, 256, generator=g)
    curr_pos = torch.randn(side * side, 1, 256, generator=g) * 0.1
    memory = torch.randn(side * side, 1, 64, generator=g)
    memory_pos = torch.randn(side * side, 1, 64, generator=g) * 0.1
    bumped = memory.clone()
    bumped[cell] += 5.0
    with torch.no_grad():
        base = attention(curr=[curr], curr_pos=[curr_pos], memory=memory, memory_pos=memory_pos)
        moved = attention(curr=[curr], curr_pos=[curr_pos], memory=bumped, memory_pos=memory_pos)
    change = (moved - base).norm(dim=-1)[:, 0]  # [HW]
    share = float(change[cell] / change.sum())
    if prior:
        assert int(change.argmax()) == cell and share > 0.1, share
    else:
        assert share < 0.05, share


def test_a_fine_tune_from_random_weights_starts_from_the_locality_prior(labelled_collection, tmp_path):
    from engine.data.finetune.sam2_memory import locality_prior
    from engine.track.model import build_model

    result = finetune_sam2(_options(labelled_collection, tmp_path / "r.pt", "random", steps=1, box_prompts=1.0,
                                    train_memory=True), log=lambda line: None)
    tuned = torch.load(result.checkpoint, weights_only=True)["model"]
    prior = build_model("sam2.1_hiera_t", image_size=256, seed=0)
    locality_prior(prior)
    key = "memory_attention.layers.0.cross_attn_image.k_proj.bias"
    assert (tuned[key] - prior.state_dict()[key]).abs().max() < 0.01  # one step at lr 1e-3 from the prior


def test_the_locality_prior_is_for_random_weights_only(labelled_collection, sam2_weights, tmp_path):
    # A weights file (trained, as users pass them) keeps its own attention: the fine-tune starts from it
    result = finetune_sam2(_options(labelled_collection, tmp_path / "m.pt", sam2_weights, steps=2, box_prompts=1.0,
                                    train_memory=True), log=lambda line: None)
    tuned = torch.load(result.checkpoint, weights_only=True)["model"]
    start = torch.load(sam2_weights, weights_only=True)["model"]
    key = "memory_attention.layers.0.cross_attn_image.q_proj.bias"
    assert (tuned[key] - start[key]).abs().max() < 0.05  # two steps at lr 1e-3, not the prior's ~6
