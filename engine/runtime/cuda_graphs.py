"""CUDA graphs for fixed-shape network calls: one graph per input shape, replayed every frame.

A YOLO forward is a few hundred small kernel launches; replaying them as one graph removes the launch
overhead that dominates at batch 1 on a fast GPU. Shapes are few (one per stream resolution and batch),
so graphs are kept per shape, at most ``max_graphs``.

Written to torch's documented CUDA graph API (warm-up on a side stream, ``torch.cuda.graph`` capture,
static input buffer, replay); its parity test is tests/detect/test_cuda_graphs.py (marked gpu). A capture
that fails turns graphs off for that call site with one warning, so the run continues eagerly.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


class GraphedCall:
    """``fn(x)`` for CUDA tensors ``x``, replayed from a captured graph per (shape, dtype).

    ``fn`` must be a pure function of ``x`` (no host sync, no data-dependent shapes). Outputs are
    copied out of the graph's static buffers, so a result stays valid after the next call.
    """

    def __init__(self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], *, max_graphs: int = 8,
                 warmup: int = 3) -> None:
        self.fn = fn
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.enabled = True
        self._graphs: OrderedDict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple]] = OrderedDict()

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not (self.enabled and x.is_cuda):
            return self.fn(x)
        key = (tuple(x.shape), x.dtype, x.device)
        entry = self._graphs.get(key)
        if entry is None:
            try:
                entry = self._capture(x)
            except RuntimeError as exc:
                log.warning("CUDA graph capture failed (%s); running this network eagerly", exc)
                self.enabled = False
                return self.fn(x)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return tuple(o.clone() for o in static_out)

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple]:
        static_in = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up allocations and autotuning outside the capture
            for _ in range(self.warmup):
                self.fn(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = tuple(self.fn(static_in))
        return graph, static_in, static_out
