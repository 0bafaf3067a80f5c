"""``overlapped_map``: any sequence of functions as threaded stages, results in order."""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, Callable, ContextManager, Iterable, Iterator

import torch

from ._flow import _END, _Control, _Stopped


def _current_stream(device: torch.device) -> Any:
    return torch.cuda.current_stream(device)


def _use_stream(stream: Any) -> ContextManager[Any]:
    return torch.cuda.stream(stream)


def overlapped_map(items: Iterable[Any], *stages: Callable[[Any], Any], depth: int = 4,
                   device: torch.device | str | None = None) -> Iterator[Any]:
    """``stages`` applied in turn to every item, each stage in its own thread; results in order.

    The generic form of :class:`Pipeline`'s machinery, for work that is not a file (the
    Python API's ``Upscaler.stream``). Pulling from ``items`` runs in a thread as well, so a
    decoder behind the iterable, every stage and the caller's own work on each result all
    overlap; queues of ``depth`` items between them bound memory. With one thread per
    stage, item ``i`` leaves in order and every stage sees the items in order.

    The first exception in a stage, or from ``items``, stops every stage and is raised in
    the caller's thread unchanged (like :func:`map`). Closing the generator early (``break``
    out of the loop) stops the threads too; nothing starts before the first ``next()``.

    ``device``: a CUDA device whose work the stages enqueue; they then run on the caller's
    current stream of it (taken at this call), as the caller's own code would, instead of the
    default stream that a new thread starts on.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    stream = None
    if device is not None and torch.device(device).type == "cuda":
        stream = _current_stream(torch.device(device))
    return _overlapped(items, stages, depth, stream)


def _overlapped(items: Iterable[Any], stages: tuple[Callable[[Any], Any], ...], depth: int,
                stream: Any) -> Iterator[Any]:
    ctl = _Control()
    queues: list[queue.Queue] = [queue.Queue(depth) for _ in range(len(stages) + 1)]

    def feed() -> None:
        for item in items:
            ctl.put(queues[0], item)
        ctl.put(queues[0], _END)

    def work(fn: Callable[[Any], Any], src: queue.Queue, dst: queue.Queue) -> None:
        while (item := ctl.get(src)) is not _END:
            ctl.put(dst, fn(item))
        ctl.put(dst, _END)

    def guarded(name: str, body: Callable[..., None], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                with _use_stream(stream) if stream is not None else contextlib.nullcontext():
                    body(*args)
            except _Stopped:
                pass
            except BaseException as exc:  # raised again in the caller's thread
                ctl.fail(name, exc)

        return threading.Thread(target=run, name=f"vsr-{name}", daemon=True)

    threads = [guarded("map-feed", feed)] + [
        guarded(f"map-stage{i}", work, fn, queues[i], queues[i + 1]) for i, fn in enumerate(stages)
    ]
    try:
        for t in threads:
            t.start()
        while True:
            try:
                item = ctl.get(queues[-1])
            except _Stopped:
                break
            if item is _END:
                break
            yield item
        if ctl.error is not None:
            raise ctl.error
    finally:
        ctl.stop.set()
        for t in threads:
            if t.ident is not None:
                t.join(timeout=5)
