"""Activation offloading: saved activations wait in CPU memory between forward and backward.

Owns `Offloader` — autograd's saved-tensor hooks for one forward pass (train.offload=on). In the
forward pass each large saved tensor (with checkpointing, each block's input) is copied into
pinned CPU memory on a side CUDA stream, so the copy overlaps the next block's compute, and its
GPU memory is given back as soon as the copy is done. In backward each comes back when it is
needed, and the one backward will need next (the tensor saved just before it: backward walks
the blocks in reverse) is already on its way, on the side stream, while the current block is
recomputed. The GPU holds the block in use and the next one, as the estimate assumes
(memory/estimate.py). Parameters (and views of them: a Linear saves its weight transposed) and small
tensors (under `min_bytes`) stay where they are.

On a CPU nothing moves (there is no other memory). The tests offload CPU tensors into CPU copies
to check the bookkeeping: the same gradients, bit for bit, and no more than one tensor fetched
ahead (tests/test_offload.py). The streams and events are CUDA's own ordering rules: a copy
waits for the work that made its tensor, a tensor's memory is not reused until the side
stream's copy of it is done (record_stream), and backward waits for a tensor's arrival.
"""
from __future__ import annotations

import weakref
from collections import Counter
from typing import Any

MIN_BYTES = 1 << 20  # smaller saved tensors are not worth a copy each way
PASSED = 8           # a tensor fetched ahead is let go once backward is this many tensors past it
_STREAMS: dict[Any, Any] = {}  # one side stream per device, for every step of the run


class _Saved:
    """One offloaded tensor: its device, the CPU copy, when that copy is done (a CUDA event), and
    the tensor fetched back ahead of backward (with the event of its arrival), if any."""
    __slots__ = ("device", "host", "copied", "ahead", "arrived", "index", "done", "__weakref__")

    def __init__(self, device, index: int):
        self.device, self.index = device, index
        self.host = self.copied = self.ahead = self.arrived = None
        self.done = False  # backward has had it (or went well past it): not to fetch ahead


def _side_stream(device):
    import torch

    if device not in _STREAMS:
        _STREAMS[device] = torch.cuda.Stream(device=device)
    return _STREAMS[device]


class Offloader:
    """A context manager: within it, autograd's saved tensors on `devices` go to CPU memory
    (pinned when `pin`) and come back for backward, the next one fetched ahead (`prefetch`).
    `stats` counts what happened: offloaded, kept, fetched_ahead, ahead_used, most_ahead."""

    def __init__(self, pin: bool = True, min_bytes: int = MIN_BYTES, devices=("cuda",),
                 prefetch: bool = True):
        self.pin, self.min_bytes, self.devices, self.prefetch = pin, min_bytes, tuple(devices), prefetch
        self.order: list[weakref.ref] = []  # the offloaded tensors of this forward pass, in order
        self.ahead: set[int] = set()        # indices fetched ahead and not yet used
        self.cursor: int | None = None      # every offloaded tensor above it is done
        self.stats: Counter = Counter()
        self._hooks = None

    def __enter__(self):
        import torch

        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        return self._hooks.__exit__(*exc)

    # ---- forward: out to CPU memory ----
    def pack(self, t):
        import torch

        weight = isinstance(t if t._base is None else t._base, torch.nn.Parameter)  # or a view of one
        if t.device.type not in self.devices or weight or t.numel() * t.element_size() < self.min_bytes:
            self.stats["kept"] += 1
            return t
        s = _Saved(t.device, len(self.order))
        if t.device.type == "cuda":
            try:
                s.host = torch.empty(t.size(), dtype=t.dtype, layout=t.layout, pin_memory=self.pin)
            except RuntimeError:  # no pinned memory to be had: this one stays on the GPU
                self.stats["kept"] += 1
                return t
            side = _side_stream(t.device)
            side.wait_stream(torch.cuda.current_stream(t.device))  # after the work that made it
            with torch.cuda.stream(side):
                s.host.copy_(t, non_blocking=self.pin)
                s.copied = side.record_event()
            t.record_stream(side)  # its memory is reused only once the copy is done
        else:  # the tests' stand-in for another memory
            s.host = t.detach().clone()
        self.order.append(weakref.ref(s))
        self.stats["offloaded"] += 1
        return s

    # ---- backward: back, and the next one ahead ----
    def unpack(self, s):
        if not isinstance(s, _Saved):
            return s
        if s.ahead is not None:
            t, s.ahead = s.ahead, None
            self.ahead.discard(s.index)
            self.stats["ahead_used"] += 1
            if t.device.type == "cuda":
                import torch

                here = torch.cuda.current_stream(t.device)
                here.wait_event(s.arrived)
                t.record_stream(here)  # fetched on the side stream, used on this one
        else:
            t = self._fetch(s, ahead=False)
        s.done = True
        if self.prefetch:
            self._fetch_next(s.index)
        self.stats["most_ahead"] = max(self.stats["most_ahead"], len(self.ahead))
        return t

    def _fetch_next(self, here: int) -> None:
        """Fetch ahead the latest-saved tensor backward has not had yet (backward walks the
        saved tensors in about the reverse order: within a block a few trade places), unless one
        is already on its way; one fetched ahead that backward went well past is let go."""
        for i in [i for i in self.ahead if i > here + PASSED]:
            passed = self.order[i]()
            if passed is not None:
                passed.ahead, passed.done = None, True  # fetched again if it is ever wanted
            self.ahead.discard(i)
        if self.ahead:
            return
        if self.cursor is None:
            self.cursor = len(self.order) - 1
        while self.cursor >= 0:
            nxt = self.order[self.cursor]()
            if nxt is not None and not nxt.done:
                nxt.ahead = self._fetch(nxt, ahead=True)
                self.ahead.add(nxt.index)
                self.stats["fetched_ahead"] += 1
                return
            self.cursor -= 1

    def _fetch(self, s: _Saved, ahead: bool):
        if s.device.type != "cuda":
            return s.host.clone()
        import torch

        if not ahead:
            torch.cuda.current_stream(s.device).wait_event(s.copied)
            return s.host.to(s.device, non_blocking=self.pin)
        side = _side_stream(s.device)
        with torch.cuda.stream(side):  # the same stream as its copy out: after it
            t = s.host.to(s.device, non_blocking=self.pin)
            s.arrived = side.record_event()
        return t


def offload_context(enabled: bool, pin: bool):
    """The context the trainer wraps a training forward pass in: an `Offloader` when enabled."""
    import contextlib

    return Offloader(pin=pin) if enabled else contextlib.nullcontext()
