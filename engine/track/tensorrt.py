"""TensorRT engines for SAM 2's parts, built from their static-shape ONNX exports (engine.track.export).

Precision follows engine.runtime.precision: the image encoder in bf16 (hiera's activations overflow
fp16), the recurrent parts (mask decoder, memory encoder, memory attention) in fp32. Engines are cached
by ONNX digest, TensorRT version and GPU (engine.runtime.tensorrt.cache_key).

What ran and what did not: TensorRT cannot be installed on this project's machines, so only the plan
(which part, which precision, which static shapes) is tested; building and running the engines is
written to TensorRT 10's documented API and has never been executed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.track.export import ExportedPart, ExportShapes, export_onnx

HALF_PRECISION_PARTS = ("image_encoder",)  # bf16; every other part stays fp32 (see the module docstring)


@dataclass(frozen=True, slots=True)
class EnginePlan:
    name: str
    onnx: Path
    bf16: bool
    metadata: dict  # static input shapes and output names, stored in the engine file


def engine_plan(parts: list[ExportedPart]) -> list[EnginePlan]:
    """What to build for each exported part: its precision and the shapes it takes."""
    return [EnginePlan(name=part.name, onnx=part.path, bf16=part.name in HALF_PRECISION_PARTS,
                       metadata={"part": part.name,
                                 "inputs": {k: list(v.shape) for k, v in part.inputs.items()},
                                 "outputs": len(part.outputs)})
            for part in parts]


def build_tracker_engines(model, *, cache_dir: str | Path, shapes: ExportShapes = ExportShapes(),
                          device: torch.device | str = "cuda") -> dict[str, Path]:
    """Export ``model``'s parts and build (or find cached) one engine each; part name -> engine path.
    Needs TensorRT and a CUDA device (BackendError otherwise)."""
    from engine.runtime.tensorrt import build_engine, import_tensorrt

    import_tensorrt()  # fail before minutes of export when TensorRT is missing
    with tempfile.TemporaryDirectory() as tmp:
        plans = engine_plan(export_onnx(model, tmp, shapes=shapes))
        return {plan.name: build_engine(plan.onnx, profile=None, fp16=False, bf16=plan.bf16,
                                        cache_dir=Path(cache_dir), metadata=plan.metadata,
                                        device=torch.device(device))
                for plan in plans}
