"""The tracker's four network parts as static-shape modules, exported to ONNX for TensorRT.

Each part wraps sam2's own modules and the ``SAM2Base`` method the tracker calls, so the exported graph
computes what the torch tracker computes:

- image_encoder: image [1, 3, S, S] -> hr0 [1, C/8, S/4, S/4], hr1 [1, C/4, S/8, S/8],
  feat [1, C, S/16, S/16], pos [1, C, S/16, S/16]
- sam_heads (prompt encoder + mask decoder): pix_feat [B, C, h, w], hr0, hr1 (batch B),
  point_coords [B, P, 2], point_labels [B, P] int32 -> low_res_masks [B, 1, 4h, 4w], obj_ptr [B, C],
  object_score_logits [B, 1]
- memory_encoder: pix_feat [B, C, h, w], high_res_masks [B, 1, S, S], object_score_logits [B, 1]
  -> maskmem_features [B, C_mem, h, w], maskmem_pos [B, C_mem, h, w]
- memory_attention: curr [hw, B, C], curr_pos [hw, B, C], memory [M, B, C_mem], memory_pos [M, B, C_mem]
  -> pix_feat [hw, B, C]

Shapes are fixed at export (B objects, P points, M memory tokens). The memory attention's rotary encoding
is exported in real arithmetic (``engine.track.rope``). Tracking frames use sam_heads with one padding
point (label -1, as sam2 does when there is no prompt) and ``multimask=True``; box prompts use P=2,
``multimask=False``. Mask prompts stay in torch (``_use_mask_as_output``: rare, and mostly a resize).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import BackendError
from engine.track.rope import real_rotary


class ImageEncoderPart(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):  # [1, 3, S, S] normalised
        out = self.model.forward_image(image)
        fpn, pos = out["backbone_fpn"], out["vision_pos_enc"]
        return fpn[0], fpn[1], fpn[-1], pos[-1]


class SamHeadsPart(nn.Module):
    def __init__(self, model, *, multimask: bool) -> None:
        super().__init__()
        self.model = model
        self.multimask = multimask

    def forward(self, pix_feat, hr0, hr1, point_coords, point_labels):
        outs = self.model._forward_sam_heads(
            backbone_features=pix_feat,
            point_inputs={"point_coords": point_coords, "point_labels": point_labels},
            mask_inputs=None, high_res_features=[hr0, hr1], multimask_output=self.multimask)
        return outs[3], outs[5], outs[6]


class MemoryEncoderPart(nn.Module):
    def __init__(self, model, *, from_prompt: bool = False) -> None:
        super().__init__()
        self.model = model
        self.from_prompt = from_prompt

    def forward(self, pix_feat, high_res_masks, object_score_logits):
        b, c, h, w = pix_feat.shape
        feats = pix_feat.flatten(2).permute(2, 0, 1)
        mem, pos = self.model._encode_new_memory(
            current_vision_feats=[feats], feat_sizes=[(h, w)], pred_masks_high_res=high_res_masks,
            object_score_logits=object_score_logits, is_mask_from_pts=self.from_prompt)
        return mem, pos[-1]


class MemoryAttentionPart(nn.Module):
    def __init__(self, model, *, num_obj_ptr_tokens: int) -> None:
        super().__init__()
        self.model = model
        self.num_obj_ptr_tokens = num_obj_ptr_tokens

    def forward(self, curr, curr_pos, memory, memory_pos):
        return self.model.memory_attention(curr=curr, curr_pos=curr_pos, memory=memory, memory_pos=memory_pos,
                                           num_obj_ptr_tokens=self.num_obj_ptr_tokens)


@dataclass(frozen=True, slots=True)
class ExportShapes:
    """The static shapes the parts are exported with."""

    batch: int = 1  # objects per call
    num_points: int = 1  # prompt points per object (1: the tracking frames' padding point)
    memory_frames: int = 7  # spatial memory frames (steady state: 1 conditioning + N-1 recent)
    num_ptrs: int = 16  # object pointers (steady state: 1 conditioning + P-1 recent)
    multimask: bool = True  # the tracking frames' setting


@dataclass(frozen=True, slots=True)
class ExportedPart:
    name: str
    path: Path
    inputs: dict[str, torch.Tensor]  # example inputs the part was exported with
    outputs: tuple[torch.Tensor, ...]  # torch's outputs on them, to check the ONNX file against


def example_parts(model, shapes: ExportShapes
                  ) -> dict[str, tuple[nn.Module, dict[str, torch.Tensor], list[str]]]:
    """Each part with example inputs of the given shapes (seeded random, realistic scales)."""
    size = model.image_size
    c, c_mem = model.hidden_dim, model.mem_dim
    h = w = size // model.backbone_stride
    b = shapes.batch
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    split = c // c_mem if model.mem_dim < c else 1
    memory_tokens = shapes.memory_frames * h * w + shapes.num_ptrs * split
    hr0_c = model.sam_mask_decoder.conv_s0.out_channels
    hr1_c = model.sam_mask_decoder.conv_s1.out_channels
    coords = torch.rand(b, shapes.num_points, 2, generator=gen) * size
    labels = torch.full((b, shapes.num_points), -1 if shapes.num_points == 1 else 1, dtype=torch.int32)
    return {
        "image_encoder": (ImageEncoderPart(model), {"image": rand(1, 3, size, size)},
                          ["hr0", "hr1", "feat", "pos"]),
        "sam_heads": (SamHeadsPart(model, multimask=shapes.multimask),
                      {"pix_feat": rand(b, c, h, w), "hr0": rand(b, hr0_c, 4 * h, 4 * w),
                       "hr1": rand(b, hr1_c, 2 * h, 2 * w), "point_coords": coords, "point_labels": labels},
                      ["low_res_masks", "obj_ptr", "object_score_logits"]),
        "memory_encoder": (MemoryEncoderPart(model),
                           {"pix_feat": rand(b, c, h, w), "high_res_masks": rand(b, 1, size, size) * 5,
                            "object_score_logits": rand(b, 1)},
                           ["maskmem_features", "maskmem_pos"]),
        "memory_attention": (MemoryAttentionPart(model, num_obj_ptr_tokens=shapes.num_ptrs * split),
                             {"curr": rand(h * w, b, c), "curr_pos": rand(h * w, b, c),
                              "memory": rand(memory_tokens, b, c_mem),
                              "memory_pos": rand(memory_tokens, b, c_mem)},
                             ["pix_feat"]),
    }


def export_onnx(model, out_dir: str | Path, *, shapes: ExportShapes = ExportShapes(),
                parts: tuple[str, ...] = ("image_encoder", "sam_heads", "memory_encoder", "memory_attention"),
                opset: int = 17) -> list[ExportedPart]:
    """Export the named parts of a sam2 model (e.g. ``tracker.model``) to ``out_dir/<part>.onnx``."""
    import warnings

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = model.image_size // model.backbone_stride
    examples = example_parts(model, shapes)
    unknown = set(parts) - set(examples)
    if unknown:
        raise BackendError(f"unknown tracker parts {sorted(unknown)}; choose from {sorted(examples)}")
    exported = []
    with torch.inference_mode(False), torch.no_grad(), real_rotary(model, (size, size)):
        for name in parts:
            module, inputs, output_names = examples[name]
            module.eval()
            outputs = module(**inputs)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            path = out_dir / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings on sam2's python-side shape checks
                torch.onnx.export(module, tuple(inputs.values()), str(path), input_names=list(inputs),
                                  output_names=output_names, opset_version=opset, dynamo=False)
            exported.append(ExportedPart(name=name, path=path, inputs=inputs,
                                         outputs=tuple(o.detach() for o in outputs)))
    return exported


def run_onnx(path: str | Path, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """Run an exported part with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for unreadable or invalid models
        raise BackendError(f"{path}: ONNX Runtime cannot load it ({exc}); export it again") from None
    feeds = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    return session.run(None, feeds)
