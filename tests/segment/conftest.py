"""Small frames with structure (the synthetic scene with stuff), and a tiny Mask2Former config: the
default one (Swin-Tiny, 69M parameters) costs seconds per frame on a 2-core CPU."""

from __future__ import annotations

import os

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # transformers and smp must never reach the hub in tests

FRAME_SIZE = (96, 160)  # (H, W): not a multiple of 32 and not square, so resizing and rounding matter
IMGSZ = 64


@pytest.fixture(scope="session")
def frames() -> list[torch.Tensor]:
    from engine.sources.synthetic import SyntheticScene

    scene = SyntheticScene(seed=2, frames=10, width=FRAME_SIZE[1], height=FRAME_SIZE[0], objects=4, stuff=True)
    return [torch.from_numpy(scene.render(i)) for i in (0, 7)]


@pytest.fixture(scope="session")
def tiny_mask2former_config(tmp_path_factory) -> str:
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], window_size=7,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, num_labels=19, hidden_dim=64, mask_feature_size=64,
                               feature_size=64, num_queries=20, decoder_layers=4, encoder_layers=1,
                               dim_feedforward=128, num_attention_heads=4, encoder_feedforward_dim=128)
    folder = tmp_path_factory.mktemp("m2f-config")
    config.save_pretrained(folder)
    return str(folder / "config.json")
