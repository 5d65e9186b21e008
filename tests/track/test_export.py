"""Export readiness: the real-valued rotary encoding equals sam2's complex one, and each exported ONNX part
matches torch under ONNX Runtime on the CPU."""

from __future__ import annotations

import pytest
import torch

from engine.track.export import ExportShapes, export_onnx, run_onnx
from engine.track.model import build_model
from engine.track.rope import apply_rotary_real, axial_rotary_tables, real_rotary

from .conftest import CONFIG

EXPORT_SIZE = 128  # feature grid 8x8; the graphs are the same at any size, only smaller and quicker


@pytest.fixture(scope="module")
def model():
    return build_model(CONFIG, image_size=EXPORT_SIZE, seed=0)


@pytest.mark.parametrize("grid, repeat", [((8, 8), 1), ((16, 16), 7), ((64, 64), 2)],
                         ids=["8x8 self-attention", "16x16 over 7 memory frames", "64x64 (1024 px)"])
def test_real_rotary_equals_sams_complex_rotary(grid, repeat):
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    dim = 256  # sam2's memory attention: one head of 256 channels
    freqs_cis = compute_axial_cis(dim=dim, end_x=grid[1], end_y=grid[0])
    cos, sin = axial_rotary_tables(dim, grid[1], grid[0])
    # torch.polar evaluates cos/sin with its own kernel: equal up to one float32 ulp near 1 (6e-8)
    torch.testing.assert_close(cos, freqs_cis.real, rtol=0, atol=1e-7)
    torch.testing.assert_close(sin, freqs_cis.imag, rtol=0, atol=1e-7)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 1, grid[0] * grid[1], dim, generator=gen)
    k = torch.randn(2, 1, grid[0] * grid[1] * repeat, dim, generator=gen)
    want_q, want_k = apply_rotary_enc(q, k, freqs_cis=freqs_cis, repeat_freqs_k=repeat > 1)
    got_q, got_k = apply_rotary_real(q, k, cos, sin, repeat_freqs_k=repeat > 1)
    # the same products summed in the same order: complex multiply is (ac - bd, ad + bc) in float32 too
    torch.testing.assert_close(got_q, want_q, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_k, want_k, rtol=0, atol=1e-6)


def test_memory_attention_under_real_rotary_is_unchanged(model):
    h = w = EXPORT_SIZE // 16
    gen = torch.Generator().manual_seed(2)
    curr, pos = torch.randn(h * w, 2, 256, generator=gen), torch.randn(h * w, 2, 256, generator=gen)
    memory = torch.randn(3 * h * w + 16, 2, 64, generator=gen)
    memory_pos = torch.randn(3 * h * w + 16, 2, 64, generator=gen)
    with torch.inference_mode():
        want = model.memory_attention(curr=curr, curr_pos=pos, memory=memory, memory_pos=memory_pos,
                                      num_obj_ptr_tokens=16)
        with real_rotary(model, (h, w)):
            got = model.memory_attention(curr=curr, curr_pos=pos, memory=memory, memory_pos=memory_pos,
                                         num_obj_ptr_tokens=16)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # four layers of 1e-6 rotary differences


# part, static shapes, absolute tolerance. Measured differences (ORT 1.32 on this x86 CPU) are at most
# 2.5e-6 on outputs of magnitude 0.1 to 4; 1e-4 leaves room for other CPUs' kernels (AVX-512 vs AVX2
# summation order) and is still far below the values themselves.
PARTS = [
    ("image_encoder", ExportShapes(), 1e-4),
    ("sam_heads", ExportShapes(batch=3), 1e-4),  # tracking frames: one padding point, 3 masks
    ("sam_heads", ExportShapes(batch=2, num_points=2, multimask=False), 1e-4),  # box prompts
    ("memory_encoder", ExportShapes(batch=3), 1e-4),
    ("memory_attention", ExportShapes(batch=3), 1e-4),  # 7 memory frames + 16 pointers per object
]


@pytest.mark.slow
@pytest.mark.parametrize("part, shapes, atol", PARTS,
                         ids=["image encoder", "heads, tracking", "heads, box prompt", "memory encoder",
                              "memory attention"])
def test_exported_part_matches_torch_in_onnx_runtime(model, tmp_path, part, shapes, atol):
    exported = export_onnx(model, tmp_path, shapes=shapes, parts=(part,))[0]
    got = run_onnx(exported.path, exported.inputs)
    assert len(got) == len(exported.outputs)
    for name, want, have in zip(("out0", "out1", "out2", "out3"), exported.outputs, got):
        have = torch.from_numpy(have)
        assert have.shape == want.shape, name
        torch.testing.assert_close(have.to(want.dtype), want, rtol=0, atol=atol, msg=f"{part} {name}")
