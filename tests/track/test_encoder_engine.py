"""The image encoder's TensorRT engine (the one tracker engine the engine loads): the build checks
TensorRT before it exports anything."""

import pytest

from engine.errors import BackendError
from engine.track import StreamingTracker
from engine.track.encoder import build_encoder_engine
from tests.track.conftest import CONFIG, SEED


def test_without_tensorrt_the_build_fails_at_once_and_exports_nothing(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    tracker = StreamingTracker.from_config(CONFIG, seed=SEED, image_size=64)
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        build_encoder_engine(tracker.model, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.gpu
def test_the_engine_is_built_once_and_cached(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT comes from NVIDIA's package index, not installed here")
    tracker = StreamingTracker.from_config(CONFIG, seed=SEED, image_size=256, device="cuda")
    first = build_encoder_engine(tracker.model, cache_dir=tmp_path)
    assert build_encoder_engine(tracker.model, cache_dir=tmp_path) == first and first.exists()
