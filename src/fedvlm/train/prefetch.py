"""Collate batches ahead of the step that uses them, so an accelerator does not wait for the
CPU (tokenizing, image processing).

Three ways, one order of batches: inside the step (``prefetch_factor=0``, the plain loop),
in one background thread (``num_workers=0``: the tokenizers and image processing release
the GIL for much of their work, and the step itself waits on the device with the GIL
released), or in worker processes through torch's ``DataLoader`` (``num_workers>0``: each
worker collates whole steps, results come back in order). Collation is deterministic, so
every way yields the same tensors; only when they are made moves.

Where the model sits on a GPU, batches are pinned in host memory as they are made and
copied to the device without blocking (`fedvlm.train.collate.to_device`).
"""

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Loading:
    """``train.dataloader_*``: how a node makes its batches (a property of its hardware,
    not of the algorithm: results are the same whichever it picks)."""

    num_workers: int = 0  # worker processes; 0: one background thread
    prefetch_factor: int = 2  # steps collated ahead (per worker); 0: inside the step
    pin_memory: bool = True  # pin batches for non-blocking copies (on a GPU only)


def pins(loading: Loading, device) -> bool:
    """Whether batches are pinned: asked for, and the model is on a CUDA device."""
    return loading.pin_memory and device is not None and torch.device(device).type == "cuda"


def collated(steps: Sequence, loading: Loading, device=None) -> Iterator:
    """``steps[0], steps[1], ...`` (each item computed by indexing, e.g. `StepBatches`),
    made as ``loading`` says."""
    pin = pins(loading, device)
    if loading.prefetch_factor == 0 or len(steps) == 0:
        return (_pinned(steps[s], pin) for s in range(len(steps)))
    if loading.num_workers > 0:
        return iter(torch.utils.data.DataLoader(
            steps, batch_size=None, shuffle=False, num_workers=loading.num_workers,
            prefetch_factor=loading.prefetch_factor, pin_memory=pin,
        ))
    return _in_thread(steps, loading.prefetch_factor, pin)


def _pinned(item, pin: bool):
    if not pin:
        return item
    if torch.is_tensor(item):
        return item.pin_memory()
    if isinstance(item, dict):
        return {k: _pinned(v, pin) for k, v in item.items()}
    if isinstance(item, list):
        return [_pinned(v, pin) for v in item]
    return item


_DONE = object()


def _in_thread(steps: Sequence, depth: int, pin: bool) -> Iterator:
    """Items of ``steps`` in order, made by one background thread at most ``depth`` ahead.
    An error there is raised here, at the item it stopped on; a consumer that stops early
    (or fails) ends the thread when the generator is closed."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        for s in range(len(steps)):
            try:
                item = (_pinned(steps[s], pin), None)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                item = (None, e)
            if not offer(item) or item[1] is not None:
                return
        offer((_DONE, None))

    worker = threading.Thread(target=produce, name="fedvlm-collate", daemon=True)
    worker.start()

    def consume():
        try:
            while True:
                item, error = ready.get()
                if error is not None:
                    raise error
                if item is _DONE:
                    return
                yield item
        finally:
            stop.set()
            worker.join()

    return consume()
