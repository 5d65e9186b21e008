"""Weights: random init from a config and seed, checkpoints by path (fetched over HTTP like an official
file), and one clear WeightsError for every broken or foreign checkpoint."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch

from engine.errors import BackendError, ConfigError, WeightsError
from engine.track import StreamingTracker, load_tracker
from engine.track.config import MODEL_CONFIGS, resolve_model_config
from engine.track.model import build_model, load_checkpoint
from engine.weights import KNOWN_WEIGHTS, fetch, sha256_of

from .conftest import CONFIG, SEED

SMALL = 64  # weights do not depend on the image size; a small one keeps building fast


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, state_dict):
    """A random-init state dict saved the way Meta's checkpoints are: {"model": state_dict}."""
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": state_dict}, path)
    return path


@pytest.fixture(scope="module")
def http_server(official_file):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(official_file.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_fetched_checkpoint_loads_the_same_weights(http_server, official_file, state_dict, tmp_path):
    digest = sha256_of(official_file)
    dest = fetch(f"{http_server}/{official_file.name}", tmp_path / official_file.name, sha256=digest,
                 progress=False)
    tracker = StreamingTracker.from_checkpoint(dest, config=CONFIG, image_size=SMALL)
    loaded = tracker.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())


@pytest.fixture(scope="module")
def model():
    return build_model(CONFIG, image_size=SMALL, seed=SEED)


def test_same_seed_gives_same_weights_and_leaves_global_rng_alone(model, state_dict):
    before = torch.get_rng_state()
    other = build_model(CONFIG, image_size=SMALL, seed=SEED + 1).state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    same = model.state_dict()  # built at another image size: the weights do not depend on it
    assert all(torch.equal(same[k], v) for k, v in state_dict.items())
    key = "memory_attention.layers.0.linear1.weight"
    assert not torch.equal(other[key], state_dict[key])


def _corrupt(src, dst):
    dst.write_bytes(b"\x00garbage" * 1000)


def _truncated(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


def _no_state_dict(src, dst):
    torch.save({"epoch": 3}, dst)


def _foreign_model(src, dst):
    # a SAM 2 (not 2.1) tiny checkpoint: the 2.1 config has parameters it lacks
    sam2_0 = build_model("configs/sam2/sam2_hiera_t.yaml", image_size=SMALL, seed=0)
    torch.save({"model": sam2_0.state_dict()}, dst)


def _wrong_shapes(src, dst):
    state = torch.load(src, weights_only=True)["model"]
    state["maskmem_tpos_enc"] = torch.zeros(3, 1, 1, 64)
    torch.save({"model": state}, dst)


# name, how the bad file is made, words the message must contain
BAD_FILES = [
    ("random bytes", _corrupt, "corrupt or truncated"),
    ("cut in half", _truncated, "corrupt or truncated"),
    ("no state dict in it", _no_state_dict, "no sam2 state dict"),
    ("another model's weights", _foreign_model, "missing"),
    ("wrong tensor shapes", _wrong_shapes, "wrong shape"),
]


@pytest.mark.parametrize("make, words", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_bad_checkpoint_raises_weights_error_naming_the_file(model, official_file, tmp_path, make, words):
    bad = tmp_path / "bad.pt"
    make(official_file, bad)
    with pytest.raises(WeightsError) as err:
        load_checkpoint(model, bad)
    message = str(err.value)
    assert str(bad) in message and words in message and "\n" not in message


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        StreamingTracker.from_checkpoint(tmp_path / "nope.pt", config=CONFIG, image_size=SMALL)
    with pytest.raises(WeightsError, match="no such weights file") as err:
        load_tracker("sam2.1_hiera_t", weights=tmp_path / "nope.pt", image_size=SMALL)
    assert str(tmp_path / "nope.pt") in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_refused_as_the_detector_refuses_it():
    with pytest.raises(BackendError, match="no CUDA device"):
        load_tracker("sam2.1_hiera_t", weights="random", image_size=SMALL, device="cuda")


# name, what the user typed, the sam2 config it means
NAMES = [
    ("short name", "sam2.1_hiera_t", "configs/sam2.1/sam2.1_hiera_t.yaml"),
    ("checkpoint's long name", "sam2.1_hiera_base_plus", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
    ("config name", "configs/sam2.1/sam2.1_hiera_l.yaml", "configs/sam2.1/sam2.1_hiera_l.yaml"),
    ("small", "sam2.1_hiera_s", "configs/sam2.1/sam2.1_hiera_s.yaml"),
]


@pytest.mark.parametrize("typed, config", [n[1:] for n in NAMES], ids=[n[0] for n in NAMES])
def test_model_names_resolve_to_sam2_configs(typed, config):
    assert resolve_model_config(typed) == config


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="sam2.1_hiera_t"):
        resolve_model_config("sam3_hiera_xl")


def test_official_checkpoints_are_registered_with_their_configs():
    import engine.track.registry  # noqa: F401  (registers on import, for `streamseg fetch --list`)

    for size in ("tiny", "small", "base_plus", "large"):
        entry = KNOWN_WEIGHTS[f"sam2.1_hiera_{size}"]
        assert entry.kind == "tracker"
        assert entry.url.endswith(f"/092824/sam2.1_hiera_{size}.pt")
        assert entry.config in MODEL_CONFIGS.values()


def test_load_tracker_by_name(monkeypatch, tmp_path, official_file):
    tracker = load_tracker("sam2.1_hiera_t", weights="random", image_size=SMALL, seed=SEED)
    assert tracker.model.image_size == SMALL
    monkeypatch.setenv("STREAMSEG_CACHE", str(tmp_path))
    with pytest.raises(WeightsError, match="streamseg fetch sam2.1_hiera_tiny"):
        load_tracker("sam2.1_hiera_t", weights="sam2.1_hiera_tiny", image_size=SMALL)
    (tmp_path / "sam2.1_hiera_tiny.pt").symlink_to(official_file)
    tracker = load_tracker("sam2.1_hiera_t", weights="sam2.1_hiera_tiny", image_size=SMALL)
    assert tracker.model.image_size == SMALL
