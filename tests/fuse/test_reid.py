"""Re-identification: the gallery's matching rule case by case, its bounded memory, and the whole effect
on synthetic scenes where objects leave for 2-5 s (longer than the retirement) and come back, with
embedding doubles that are noisy functions of each object's true identity; ids scored by TrackEval."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ConfigError
from engine.eval.reid import EmbeddingNoise, ReturningScene, record_trace, replay
from engine.fuse.reid import ReidConfig, ReidGallery, Signature, SignatureAccumulator

DIM = 8


def _vec(*hot: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(hot)] = hot
    return v


def _sig(embedding, *, pointer=None, class_id=0, box=(100, 100, 140, 140), time=0.0) -> Signature:
    return Signature(embedding=np.asarray(embedding, np.float32), pointer=None if pointer is None else
                     np.asarray(pointer, np.float32), class_id=class_id, box=box, time=time)


def _gallery(**config) -> ReidGallery:
    return ReidGallery(ReidConfig(**config), embedding_dim=DIM, pointer_dim=DIM)


def test_a_returning_track_takes_its_id_back_once():
    gallery = _gallery()
    gallery.retire(7, _sig(_vec(1, 0.1), time=1.0))
    assert gallery.match([_sig(_vec(1, 0.2), time=4.0)]) == [7]
    assert len(gallery) == 0  # consumed: a second look-alike does not get 7 as well
    assert gallery.match([_sig(_vec(1, 0.2), time=4.5)]) == [None]


# name, entry, candidate, config: each breaks one condition of an otherwise clear match
REFUSED = [
    ("other class", _sig(_vec(1), class_id=1, time=1.0), _sig(_vec(1), class_id=2, time=3.0), {}),
    ("not similar enough", _sig(_vec(1, 0), time=1.0), _sig(_vec(0.3, 1), time=3.0), {"threshold": 0.6}),
    ("seen before it was lost", _sig(_vec(1), time=3.0), _sig(_vec(1), time=3.0), {}),
    ("older than max_age_s", _sig(_vec(1), time=1.0), _sig(_vec(1), time=32.0), {"max_age_s": 30.0}),
    ("too far for the time unseen", _sig(_vec(1), box=(0, 0, 40, 40), time=1.0),
     _sig(_vec(1), box=(900, 0, 940, 40), time=2.0), {"max_speed": 3.0}),
    ("pointer disagrees", _sig(_vec(1), pointer=_vec(1, 0), time=1.0),
     _sig(_vec(1), pointer=_vec(0, 1), time=3.0), {"pointer_weight": 0.5, "threshold": 0.6}),
]


@pytest.mark.parametrize("entry, candidate, config", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_an_implausible_or_dissimilar_candidate_gets_no_id(entry, candidate, config):
    gallery = _gallery(**config)
    gallery.retire(7, entry)
    assert gallery.match([candidate]) == [None]
    assert gallery.ids == ([] if config.get("max_age_s") else [7])  # refused, not consumed (expired: dropped)


def test_the_motion_model_allows_more_distance_the_longer_an_object_was_unseen():
    """Bounded speed: reach = box diagonal x (1 + max_speed x seconds unseen)."""
    entry = _sig(_vec(1), box=(0, 0, 30, 40), time=0.0)  # diagonal 50 px
    for seconds, distance, expected in [(1.0, 190.0, 7), (1.0, 210.0, None), (4.0, 640.0, 7)]:
        gallery = _gallery(max_speed=3.0)
        gallery.retire(7, entry)
        box = (distance, 0.0, distance + 30.0, 40.0)
        assert gallery.match([_sig(_vec(1), box=box, time=seconds)]) == [expected], (seconds, distance)


def test_two_look_alikes_in_the_gallery_give_a_new_id_rather_than_a_guess():
    gallery = _gallery(margin=0.05)
    gallery.retire(1, _sig(_vec(1, 0.30), time=1.0))
    gallery.retire(2, _sig(_vec(1, 0.32), time=1.0))
    assert gallery.match([_sig(_vec(1, 0.31), time=3.0)]) == [None]
    gallery = _gallery(margin=0.0)
    gallery.retire(1, _sig(_vec(1, 0.30), time=1.0))
    gallery.retire(2, _sig(_vec(1, 0.32), time=1.0))
    assert gallery.match([_sig(_vec(1, 0.31), time=3.0)]) in ([1], [2])


def test_spawns_on_one_frame_are_matched_jointly():
    """A greedy pass would give entry 1 to the first candidate and leave the second without; the
    optimal assignment gives each candidate its own entry."""
    gallery = _gallery(threshold=0.5, margin=0.0)
    gallery.retire(1, _sig(_vec(1, 0), time=1.0))
    gallery.retire(2, _sig(_vec(0, 1), time=1.0))
    first = _sig(_vec(1, 0.9), time=3.0)  # cos 0.74 with 1, 0.67 with 2
    second = _sig(_vec(1, 0.1), time=3.0)  # cos 0.995 with 1, 0.10 with 2
    assert gallery.match([first, second]) == [2, 1]


def test_memory_is_fixed_however_many_tracks_retire():
    gallery = _gallery(capacity=4)
    size = gallery.memory_bytes()
    for k in range(1000):
        gallery.retire(k, _sig(_vec(1, k % 7), time=float(k) * 0.01))
    assert len(gallery) == 4 and gallery.ids == [996, 997, 998, 999]  # the oldest went first
    assert gallery.memory_bytes() == size


def test_a_signature_averages_the_last_good_frames_only():
    acc = SignatureAccumulator(window=2, min_good=2)
    acc.observe(class_id=3, box=(0, 0, 10, 10), time=0.0, good=True, embedding=_vec(0, 0, 1))
    assert acc.signature() is None  # one good frame is not enough
    acc.observe(class_id=3, box=(0, 0, 10, 10), time=0.1, good=True, embedding=_vec(1, 0))
    acc.observe(class_id=3, box=(5, 5, 15, 15), time=0.2, good=True, embedding=_vec(0, 1))
    acc.observe(class_id=3, box=(9, 9, 19, 19), time=0.3, good=False, embedding=_vec(0, 0, 0, 1))
    acc.observe(class_id=3, box=(0, 30, 1, 33), time=0.4, good=False)  # a sliver, leaving by the edge
    sig = acc.signature()
    np.testing.assert_allclose(sig.embedding, _vec(1, 1) / np.sqrt(2), atol=1e-6)  # last two good ones
    assert sig.box == (0, 30, 1, 33) and sig.time == 0.4 and sig.class_id == 3  # last seen, good or not
    assert sig.size == pytest.approx(np.hypot(10, 10))  # its size when last seen well, not the sliver's


@pytest.mark.parametrize("config, words", [
    ({"threshold": 1.5}, "threshold"), ({"capacity": 0}, "capacity"), ({"max_age_s": 0.0}, "max_age_s"),
    ({"max_speed": -1.0}, "max_speed"), ({"pointer_weight": -0.1}, "pointer_weight"),
], ids=["threshold above 1", "no capacity", "no age", "negative speed", "negative weight"])
def test_bad_settings_are_config_errors(config, words):
    with pytest.raises(ConfigError, match=words):
        ReidConfig(**config)


def test_a_zero_embedding_is_refused():
    with pytest.raises(ValueError, match="non-zero"):
        _sig(np.zeros(DIM))


# ------------------------------------------------------------------ on ground truth

# Frames and pixels are the cost here (the fuser's per-frame mask fusion); every duration in the scenes
# is in seconds, so 10 fps and 160x120 keep the scenes' timing and cut a run to ~200 small frames.
FPS = 10
SECONDS = 20


def _scene(seed: int) -> ReturningScene:
    return ReturningScene(seed=seed, frames=SECONDS * FPS, width=160, height=120, objects=8, fps=FPS)


def test_returning_scenes_take_objects_out_of_sight_for_2_to_5_seconds():
    scene = _scene(0)
    absences = scene.absences()
    assert sum(len(spans) for spans in absences.values()) >= 4
    for obj_id, spans in absences.items():
        for start, end in spans:
            assert 2.0 <= end - start <= 5.0
            for i in range(int(np.ceil(start * FPS)), int(end * FPS) + 1):
                assert obj_id not in scene.ground_truth(i).ids, (obj_id, i)


@pytest.fixture(scope="module")
def traces():
    """Two scenes through the fuser with clean doubles, recorded once; the gallery is replayed on them."""
    return {seed: record_trace(_scene(seed), seed=seed) for seed in (0, 1)}


@pytest.fixture(scope="module")
def clean_runs(traces):
    return [replay(trace, ReidConfig()) for trace in traces.values()]


@pytest.mark.slow
def test_returning_objects_get_their_ids_back_on_clean_scenes(clean_runs):
    returns = sum(r.counts.returns for r in clean_runs)
    recovered = sum(r.counts.recovered for r in clean_runs)
    queries = sum(r.counts.queries for r in clean_runs)
    false = sum(r.counts.false for r in clean_runs)
    log = "\n".join(line for r in clean_runs for line in r.log)
    assert returns >= 8, log  # the scenes really retired and brought back objects
    assert recovered / returns >= 0.9, log
    assert false / queries <= 0.02, log
    assert sum(r.counts.new_objects for r in clean_runs) >= 4  # never-seen objects were looked up too


@pytest.mark.slow
def test_the_gallery_raises_idf1_and_hota(clean_runs):
    for run in clean_runs:
        before, after = run.before, run.after
        assert before.predicted_ids > before.gt_objects  # without it every return is a new id
        assert after.predicted_ids < before.predicted_ids, run.log
        assert after.idf1 > before.idf1 + 0.05 and after.hota > before.hota, (before.format(), after.format())


@pytest.mark.slow
def test_a_full_gallery_drops_its_oldest_entries_and_keeps_working(traces):
    """Capacity 1: each retirement pushes the previous one out; no id goes to the wrong object, fewer
    returns are recovered."""
    full = replay(traces[0], ReidConfig(), score=False)
    tiny = replay(traces[0], ReidConfig(capacity=1), score=False)
    assert tiny.gallery_peak == 1 < full.gallery_peak
    assert tiny.counts.false == 0
    assert tiny.counts.recovered <= full.counts.recovered


@pytest.mark.slow
def test_noisier_embeddings_lose_returns_rather_than_swap_ids(traces):
    """At twice the appearance and pointer noise, the threshold and margin still refuse look-alikes."""
    noise = EmbeddingNoise(appearance_sigma=1.2, pointer_sigma=1.0)
    runs = [replay(trace, ReidConfig(), noise=noise, score=False) for trace in traces.values()]
    queries, false = sum(r.counts.queries for r in runs), sum(r.counts.false for r in runs)
    assert false / queries <= 0.05, "\n".join(line for r in runs for line in r.log)
