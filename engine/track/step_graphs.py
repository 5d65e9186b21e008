"""The tracker's per-frame step without launch overhead: CUDA graphs over padded object slots.

At batch sizes of a few objects, a frame of SAM 2's recurrent path is hundreds of small kernels
(memory attention, mask decoder, memory encoder), and on a fast GPU launching them costs more than
running them. ``GraphedStep`` captures engine.track.padding's step once per layout (object bucket,
memory frames, pointers) and replays it: each frame is then a few input copies, one graph launch and
four output copies. Layouts change rarely (engine.track.padding says when), so a new object in a bucket
that has a graph does not capture again.

Why CUDA graphs and not ``torch.compile``: a capture takes a few eager runs (milliseconds), a compile
of these modules takes minutes (sam2's own ``vos_optimized`` mode), and every new layout would
recompile; graphs also replay sam2's modules unchanged, so parity with the eager step is exact but for
the attention kernel's summation order.

Where capture fails (an op that synchronises, an allocator that cannot capture, a driver without graph
support) the step runs the same padded function eagerly and says so once in the log.

``GraphedImageEncoder`` replays the image encoder the same way, one graph per input shape
(engine.runtime.cuda_graphs.GraphedCall).

Graphs hold the addresses of the model's weights and of the tracker's memory position encoding: loading
new weights in place (``load_state_dict``) is seen by the graphs, moving the model to another device is
not (build a new tracker). One ``GraphedStep`` serves one thread.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.runtime.cuda_graphs import GraphedCall
from engine.track.memory import MemorySelection
from engine.track.padding import (FrameFeatures, PaddedLayout, PaddedMemory, StepConstants, StepOutputs,
                                  pad_memory, padded_step)

log = logging.getLogger(__name__)


class PaddedStep:
    """engine.track.padding's padded step, run eagerly: what ``GraphedStep`` replays, on any device."""

    def __init__(self, model, constants: StepConstants) -> None:
        self.model = model
        self.constants = constants
        device = model.device
        self._zero_feature = torch.zeros((model.mem_dim, *_grid(constants.hw)), dtype=torch.bfloat16,
                                         device=device)
        self._zero_ptr = torch.zeros((model.hidden_dim,), dtype=torch.float32, device=device)

    def __call__(self, feats: FrameFeatures, selections: Sequence[MemorySelection],
                 maskmem_pos: torch.Tensor) -> StepOutputs:  # maskmem_pos: [HW, 1, C_mem]
        """Outputs for the ``len(selections)`` objects, each field in storage of its own."""
        layout = self.constants.layout(selections)
        memory = pad_memory(selections, layout, zero_feature=self._zero_feature, zero_ptr=self._zero_ptr)
        out = padded_step(self.model, feats, memory, layout, maskmem_pos, self.constants)
        return out.rows(len(selections))

    @property
    def graphed(self) -> bool:
        """Whether steps replay CUDA graphs (False: they run eagerly)."""
        return False


@dataclass(frozen=True, slots=True)
class _StaticFrame:
    """A captured graph's frame inputs (same fields as the tracker's frame features)."""

    vision_feats: torch.Tensor
    vision_pos: torch.Tensor
    size: tuple[int, int]
    high_res: tuple[torch.Tensor, ...]

    @classmethod
    def like(cls, feats: FrameFeatures) -> _StaticFrame:
        return cls(vision_feats=feats.vision_feats.clone(), vision_pos=feats.vision_pos.clone(),
                   size=tuple(feats.size), high_res=tuple(x.clone() for x in feats.high_res))

    def fill(self, feats: FrameFeatures) -> None:
        self.vision_feats.copy_(feats.vision_feats)
        self.vision_pos.copy_(feats.vision_pos)
        for static, x in zip(self.high_res, feats.high_res):
            static.copy_(x)


@dataclass(slots=True)
class _Captured:
    graph: torch.cuda.CUDAGraph
    frame: _StaticFrame
    memory: PaddedMemory
    maskmem_pos: torch.Tensor  # read by address: the graph is valid while the tracker keeps this tensor
    outputs: StepOutputs


class GraphedStep(PaddedStep):
    """The padded step replayed from CUDA graphs, one per layout (at most ``max_graphs``, least recently
    used dropped first); eager where capture fails.

    All graphs share one memory pool: they replay one at a time on one stream, and each replay's outputs
    are copied out before the next replay, so one graph's scratch memory may be another's.
    """

    def __init__(self, model, constants: StepConstants, *, max_graphs: int = 16, warmup: int = 2) -> None:
        super().__init__(model, constants)
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.enabled = model.device.type == "cuda"
        self.captures = 0  # graphs captured so far (dropped ones included)
        self.replays = 0
        self._graphs: OrderedDict[PaddedLayout, _Captured] = OrderedDict()
        self._pool = None
        if not self.enabled:
            log.warning("CUDA graphs need a CUDA device (the tracker is on %s); running the padded tracker "
                        "step eagerly", model.device)

    @property
    def graphed(self) -> bool:
        return self.enabled

    def __call__(self, feats: FrameFeatures, selections: Sequence[MemorySelection],
                 maskmem_pos: torch.Tensor) -> StepOutputs:
        if not self.enabled:
            return super().__call__(feats, selections, maskmem_pos)
        layout = self.constants.layout(selections)
        entry = self._graphs.get(layout)
        if entry is not None and entry.maskmem_pos is not maskmem_pos:
            self._graphs.clear()  # a new position-encoding tensor: every graph reads the old one
            entry = None
        if entry is None:
            memory = pad_memory(selections, layout, zero_feature=self._zero_feature, zero_ptr=self._zero_ptr)
            try:
                entry = self._capture(feats, memory, layout, maskmem_pos)
            except RuntimeError as exc:  # torch reports capture faults (and OOM inside one) as RuntimeError
                log.warning("CUDA graph capture of the tracker step failed (%s); running it eagerly from now "
                            "on", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                self.enabled = False
                self._graphs.clear()
                return super().__call__(feats, selections, maskmem_pos)
            self._graphs[layout] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(layout)
            entry.frame.fill(feats)
            pad_memory(selections, layout, zero_feature=self._zero_feature, zero_ptr=self._zero_ptr,
                       out=entry.memory)
        entry.graph.replay()
        self.replays += 1
        return entry.outputs.rows(len(selections))

    def _capture(self, feats: FrameFeatures, memory: PaddedMemory, layout: PaddedLayout,
                 maskmem_pos: torch.Tensor) -> _Captured:
        """Warm up on a side stream (lazy inits, rotary tables, library handles), then capture; the static
        inputs are allocated outside the graph, so they are never another graph's scratch."""
        frame = _StaticFrame.like(feats)
        device = maskmem_pos.device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                padded_step(self.model, frame, memory, layout, maskmem_pos, self.constants)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the pipeline's source and sink threads may touch CUDA (copies, frees) while this
        # thread captures; in the default global mode any such call would invalidate the capture
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            outputs = padded_step(self.model, frame, memory, layout, maskmem_pos, self.constants)
        if self._pool is None:
            self._pool = graph.pool()
        self.captures += 1
        log.debug("captured the tracker step for %s", layout)
        return _Captured(graph=graph, frame=frame, memory=memory, maskmem_pos=maskmem_pos, outputs=outputs)


class GraphedImageEncoder:
    """sam2's image encoder in ``dtype`` (autocast), replayed from a CUDA graph per input shape.

    Called like the exported encoders of engine.track.encoder: images [B, 3, S, S] normalised ->
    (the feature levels the model uses, [B, C_i, h_i, w_i] each, then the top level's position encoding).
    """

    def __init__(self, model, dtype: torch.dtype) -> None:
        self.model = model
        self.dtype = dtype
        self._call = GraphedCall(self._forward)

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Autocast's weight-cast cache would hold tensors made during capture: graphs need it off.
        with torch.autocast(images.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32,
                            cache_enabled=False):
            out = self.model.forward_image(images)
        levels = out["backbone_fpn"][-self.model.num_feature_levels:]
        return (*levels, out["vision_pos_enc"][-1])

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self._call(images)


def _grid(hw: int) -> tuple[int, int]:
    side = round(hw ** 0.5)
    if side * side != hw:
        raise ValueError(f"memory grid of {hw} tokens is not square (sam2 memory grids are)")
    return side, side
