"""The propagation heads (engine.track.heads) against sam2's ``_forward_sam_heads`` on the same inputs."""

import pytest
import torch

from engine.track import StreamingTracker
from engine.track.heads import propagation_heads
from tests.track.conftest import CONFIG, SEED


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single-mask"])
@pytest.mark.parametrize("visible", [True, False], ids=["object", "no-object"])
def test_propagation_heads_are_sam2s_heads(multimask, visible):
    model = StreamingTracker.from_config(CONFIG, seed=SEED, image_size=128).model
    generator = torch.Generator().manual_seed(0)
    side, batch = 128 // 16, 3
    feats = torch.randn(batch, 256, side, side, generator=generator)
    high_res = [torch.randn(batch, 32, 4 * side, 4 * side, generator=generator),
                torch.randn(batch, 64, 2 * side, 2 * side, generator=generator)]
    if not visible:  # the object score head says "no object": sam2 swaps in its no-object logits and pointer
        with torch.no_grad():
            model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(-50.0)
    with torch.inference_mode():
        want = model._forward_sam_heads(backbone_features=feats, point_inputs=None, mask_inputs=None,
                                        high_res_features=high_res, multimask_output=multimask)
        got = propagation_heads(model, feats, high_res, multimask=multimask)
    for mine, theirs in zip(got, want[3:7]):
        assert mine.shape == theirs.shape
        # the same operations on the same numbers, bilinear upsampling on one mask instead of all of them
        assert torch.allclose(mine, theirs.float(), atol=1e-5)
    assert bool((got[3] > 0).all()) is visible


def test_propagation_heads_hand_out_float32_under_bf16_autocast():
    """The fast CPU path runs the heads under bf16 autocast; the masks, object pointers (next frames'
    memory) and object scores leave them in float32, as the exact path's do."""
    model = StreamingTracker.from_config(CONFIG, seed=SEED, image_size=128).model
    feats = torch.randn(2, 256, 8, 8, generator=torch.Generator().manual_seed(0))
    high_res = [torch.randn(2, 32, 32, 32), torch.randn(2, 64, 16, 16)]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = propagation_heads(model, feats, high_res, multimask=True)
    assert [t.dtype for t in got] == [torch.float32] * 4
