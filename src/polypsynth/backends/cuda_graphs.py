"""CUDA graphs for a function of tensors: recorded once per input signature, replayed after.

A diffusion step is hundreds of small kernels; at small batches their launch cost, not their
arithmetic, sets the speed. A recorded graph launches them all at once. Inputs are copied into
static buffers the graph reads, outputs are cloned out of the buffers it writes, and every graph
shares one memory pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class CudaGraphed:
    """`CudaGraphed(fn)(*tensors)` equals `fn(*tensors)` (same kernels, same order), replayed from a
    graph recorded for that signature (shapes, dtypes). `fn` must be capturable: no host syncs, no
    data-dependent shapes."""

    def __init__(self, fn: Callable[..., torch.Tensor], warmup: int = 2):
        self.fn, self.warmup = fn, warmup
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}
        self._pool: Any = None  # the memory pool the graphs share, after the first capture

    def _record(self, args: tuple[torch.Tensor, ...]):
        static = [a.clone() for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # library autotuning and lazy init happen outside the capture
            for _ in range(self.warmup):
                self.fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self.fn(*static)
        self._pool = graph.pool()
        return graph, static, out

    @torch.no_grad()
    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        key = tuple((tuple(a.shape), a.dtype, a.device) for a in args)
        if key not in self.graphs:
            self.graphs[key] = self._record(args)
        graph, static, out = self.graphs[key]
        for dst, src in zip(static, args, strict=True):
            dst.copy_(src)
        graph.replay()
        return out.clone()  # the next replay overwrites `out`
