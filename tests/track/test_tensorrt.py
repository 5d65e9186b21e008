"""TensorRT for the tracker: the build plan (tested here) and the build itself (needs TensorRT)."""

import pytest

from engine.errors import BackendError
from engine.track import StreamingTracker
from engine.track.export import export_onnx
from engine.track.tensorrt import build_tracker_engines, engine_plan
from tests.track.conftest import CONFIG, SEED


@pytest.fixture(scope="module")
def tracker():
    return StreamingTracker.from_config(CONFIG, seed=SEED, image_size=256)


def test_plan_builds_the_encoder_in_bf16_and_the_recurrent_path_in_fp32(tracker, tmp_path):
    parts = export_onnx(tracker.model, tmp_path, parts=("image_encoder", "memory_attention"))
    plans = {p.name: p for p in engine_plan(parts)}
    assert plans["image_encoder"].bf16 and not plans["memory_attention"].bf16
    assert plans["image_encoder"].metadata["inputs"] == {name: list(t.shape)
                                                        for name, t in parts[0].inputs.items()}
    assert all(p.onnx.exists() for p in plans.values())


def test_without_tensorrt_the_build_fails_at_once_and_says_so(tracker, tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        build_tracker_engines(tracker.model, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing exported before the check


@pytest.mark.gpu
def test_engines_are_built_once_and_cached(tracker, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT comes from NVIDIA's package index, not installed here")
    first = build_tracker_engines(tracker.model.cuda(), cache_dir=tmp_path)
    again = build_tracker_engines(tracker.model, cache_dir=tmp_path)
    assert first == again and set(first) == {"image_encoder", "sam_heads", "memory_encoder", "memory_attention"}
