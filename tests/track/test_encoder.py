"""The image encoder from its ONNX export (ONNX Runtime here; TensorRT's runner stood in for) gives the
tracker what the model's own encoder gives, and its export is cached by the weights it was made from."""

import logging

import pytest
import torch

from engine.errors import BackendError, ConfigError
from engine.track import StreamingTracker
from engine.track import encoder as encoder_module
from engine.track.config import TrackerConfig
from tests.track.conftest import CONFIG, SEED, SIZE, compare, run_tracker

ORT = TrackerConfig(image_size=SIZE, encoder_backend="onnxruntime", precision="exact")
EVENTS = {0: [("add", 1, [40, 60, 150, 220]), ("add", 2, [120, 30, 230, 140])]}


@pytest.fixture(scope="module")
def model():
    return StreamingTracker.from_config(CONFIG, seed=SEED, image_size=SIZE).model


@pytest.fixture(autouse=True)
def _fresh_encoders():
    encoder_module.clear_loaded()
    yield
    encoder_module.clear_loaded()


def test_onnxruntime_encoder_tracks_as_the_torch_encoder(model, clip_frames):
    torch_run = run_tracker(StreamingTracker(model, options=TrackerConfig(image_size=SIZE, precision="exact")),
                            clip_frames[:10], EVENTS)
    ort_run = run_tracker(StreamingTracker(model, options=ORT), clip_frames[:10], EVENTS)
    iou, diff = compare(ort_run, torch_run)
    # ONNX Runtime's kernels sum in another order than torch's: the encoder's outputs differ by up to
    # ~3e-6, and the logits after 30 frames through memory by ~5e-7 (mask IoU 0.99997; measured
    # 2026-11-24). 1e-3 leaves room for other CPUs' kernels; a wrong level, layout or position encoding
    # moves logits by whole units.
    assert diff < 1e-3, diff
    assert iou > 0.99, iou


def test_streams_stepped_together_use_the_exported_encoder_per_frame(model, clip_frames):
    together = [StreamingTracker(model, options=ORT) for _ in range(2)]
    alone = [StreamingTracker(model, options=ORT) for _ in range(2)]
    streams = [clip_frames[:4], clip_frames[:4, :, ::-1].copy()]
    for group in (together, alone):
        for tracker, frames in zip(group, streams):
            tracker.step(frames[0])
            tracker.add_object(1, box=[40, 60, 150, 220])
    for t in range(1, 4):
        batched = StreamingTracker.step_streams(together, [s[t] for s in streams])
        single = [tracker.step(s[t]) for tracker, s in zip(alone, streams)]
        for b, s in zip(batched, single):
            # batch 1 in both: the same session on the same inputs gives the same numbers
            torch.testing.assert_close(b.logits, s.logits, rtol=0, atol=1e-5)


def test_the_export_is_cached_by_weights(model, tmp_path, monkeypatch):
    first = encoder_module.exported_image_encoder(model, "onnxruntime", device="cpu", cache_dir=tmp_path)
    exports = list(tmp_path.glob("*/image_encoder.onnx"))
    assert len(exports) == 1 and not list(tmp_path.glob("*/tmp*")), "one whole file, no leftovers"

    encoder_module.clear_loaded()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this model's export")

    monkeypatch.setattr("engine.track.export.export_onnx", no_export)
    again = encoder_module.exported_image_encoder(model, "onnxruntime", device="cpu", cache_dir=tmp_path)
    assert again is not first  # a new session, from the cached file
    image = torch.randn(1, 3, SIZE, SIZE)
    for a, b in zip(first(image), again(image)):
        assert torch.equal(a, b)

    other = StreamingTracker.from_config(CONFIG, seed=SEED + 1, image_size=SIZE).model
    assert encoder_module.model_digest(other) != encoder_module.model_digest(model)


def test_each_thread_count_gets_its_own_session(model, tmp_path):
    """An overlapped pipeline builds its tracker on a share of the cores: the encoder it gets runs on
    that share, not on the thread count of a session another pipeline built before it."""
    from engine.overlap import torch_threads

    encoders = {}
    for threads in (2, 1, 2):
        with torch_threads(threads):
            enc = encoder_module.exported_image_encoder(model, "onnxruntime", device="cpu", cache_dir=tmp_path)
        assert enc._session.get_session_options().intra_op_num_threads == threads
        assert encoders.setdefault(threads, enc) is enc  # the same count shares one session
    assert encoders[1] is not encoders[2]


def test_an_unwritable_cache_falls_back_to_a_temporary_export(model, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="engine.track.encoder"):
        enc = encoder_module.exported_image_encoder(model, "onnxruntime", device="cpu", cache_dir=blocker / "c")
    assert "cannot cache the image encoder export" in caplog.text
    hr0, hr1, feat, pos = enc(torch.randn(2, 3, SIZE, SIZE))
    assert feat.shape == (2, model.hidden_dim, SIZE // 16, SIZE // 16) and pos.shape == feat.shape
    assert hr0.shape[-1] == SIZE // 4 and hr1.shape[-1] == SIZE // 8


def test_a_corrupt_cached_export_names_the_file_and_the_fix(model, tmp_path):
    path = tmp_path / encoder_module.model_digest(model)[:24] / "image_encoder.onnx"
    path.parent.mkdir()
    path.write_bytes(b"\x08\x07 truncated")
    with pytest.raises(BackendError, match="delete it") as err:
        encoder_module.exported_image_encoder(model, "onnxruntime", device="cpu", cache_dir=tmp_path)
    assert str(path) in str(err.value)


def test_bad_backends_are_refused_before_any_export(model, tmp_path, monkeypatch):
    monkeypatch.setattr("engine.track.export.export_onnx", lambda *a, **k: pytest.fail("exported"))
    with pytest.raises(ConfigError, match="onnxruntime"):
        TrackerConfig(encoder_backend="openvino")
    try:  # neither branch needs a GPU
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="TensorRT is not installed"):
            encoder_module.exported_image_encoder(model, "tensorrt", device="cpu", cache_dir=tmp_path)
    else:
        with pytest.raises(ConfigError, match="CUDA device"):
            encoder_module.exported_image_encoder(model, "tensorrt", device="cpu", cache_dir=tmp_path)


def test_engine_encoder_binds_the_exported_names_frame_by_frame(model, monkeypatch):
    """TensorRT cannot run here: a runner with TensorRTRunner's interface (inputs and outputs by the
    export's tensor names, static batch 1) runs the exported part in torch, and the encoder must feed it
    frame by frame and give back the four levels in order."""
    from engine.track.export import ImageEncoderPart

    part = ImageEncoderPart(model).eval()
    calls = []

    class FakeRunner:
        def __init__(self, path, *, device):
            self.device = device

        def __call__(self, inputs):
            (name, image), = inputs.items()
            assert name == "image" and image.shape[0] == 1 and image.is_contiguous()
            calls.append(image)
            with torch.inference_mode():
                return dict(zip(encoder_module.OUTPUTS, part(image)))

    monkeypatch.setattr("engine.runtime.tensorrt.TensorRTRunner", FakeRunner)
    enc = encoder_module.EngineImageEncoder("unused.engine", device=torch.device("cpu"))
    images = torch.randn(3, 3, SIZE, SIZE)
    levels = enc(images)
    assert len(calls) == 3
    with torch.inference_mode():
        expected = part(images)
    for got, want in zip(levels, expected, strict=True):
        # batch 3 against three batch-1 calls: float32 summation order only
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("choice", "precision", "features", "expected"), [
    ("auto", "auto", (), "OnnxImageEncoder"),  # fp32 on this CPU: ONNX Runtime is 1.2x torch
    ("auto", "auto", ("avx512_bf16",), "Bf16ImageEncoder"),  # bf16 in torch: 2x ONNX Runtime's fp32
    ("auto", "exact", ("avx512_bf16",), "OnnxImageEncoder"),
    ("torch", "auto", (), "NoneType"),  # the model's own modules, fp32
], ids=["plain-cpu", "bf16-cpu", "bf16-cpu-exact", "torch-asked"])
def test_the_command_picks_the_fastest_encoder_for_the_cpu_unless_told(monkeypatch, choice, precision, features,
                                                                       expected):
    import engine.runtime.precision as precision_module
    from engine.app import RunOptions, build_pipeline

    monkeypatch.setattr(precision_module, "cpu_bf16_features", lambda: features)
    built = build_pipeline(RunOptions(source="synthetic:seed=1,frames=2,size=64x48", device="cpu",
                                      weights="random", imgsz=64, tracker_weights="random", tracker_size=SIZE,
                                      tracker_encoder=choice, precision=precision))
    try:
        assert type(built.pipeline.tracker.image_encoder).__name__ == expected
    finally:
        built.pipeline.source.close()
