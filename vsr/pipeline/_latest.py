"""Latest-frame-wins stages for the live preview."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Generic, TypeVar

from ..errors import PipelineError, VsrError

# The file pipeline above must keep every frame, so its stages hand work on through bounded
# queues and the slowest stage sets the pace. A live preview must instead stay current: when a
# stage is slower than the one feeding it, the stale values are dropped, never queued, so that
# what is shown is at most one item behind at each stage and latency stays bounded.

_T = TypeVar("_T")
_U = TypeVar("_U")


class SlotClosed(Exception):
    """The slot was closed: by its producer at the end of the stream, or to stop the chain."""


class LatestSlot(Generic[_T]):
    """A one-value mailbox between two threads in which the newest value wins.

    :meth:`put` never blocks: a value nobody has taken yet is replaced and counted in
    ``dropped``. :meth:`take` waits for a value not taken before. After :meth:`close`,
    ``put`` raises :class:`SlotClosed` and ``take`` does once the slot is empty.
    Counters: ``offered == taken + dropped + pending``.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: _T | None = None
        self._full = False
        self._closed = False
        self.offered = 0
        self.taken = 0
        self.dropped = 0

    def put(self, value: _T) -> None:
        with self._cond:
            if self._closed:
                raise SlotClosed
            if self._full:
                self.dropped += 1
            self._value, self._full = value, True
            self.offered += 1
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> _T | None:
        """The newest value not taken yet; None when ``timeout`` seconds pass without one."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self._closed, timeout):
                return None
            if not self._full:
                raise SlotClosed
            value, self._value, self._full = self._value, None, False
            self.taken += 1
            return value

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """1 when a value waits to be taken, else 0."""
        return int(self._full)


class LatestFrameStages:
    """Threads of a latest-frame-wins chain: a producer and workers linked by :class:`LatestSlot`.

    Each stage runs in a daemon thread. A producer calls ``produce()`` until it returns
    None; a worker applies ``fn`` to the newest value of its input. A stage that ends
    closes its output slots, so the end of the stream travels down the chain to the
    consumer (the caller's thread, which takes from the last slot until SlotClosed).
    The first exception in a stage is kept and every slot closed, so that all stages
    end; :meth:`raise_error` re-raises it in the caller's thread.
    """

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.stage: str | None = None
        self._threads: list[threading.Thread] = []
        self._slots: list[LatestSlot[Any]] = []
        self._lock = threading.Lock()

    def producer(self, name: str, produce: Callable[[], _T | None], *outs: LatestSlot[_T]) -> None:
        def body() -> None:
            while (value := produce()) is not None:
                for out in outs:
                    out.put(value)

        self._add(name, body, (), outs)

    def worker(self, name: str, fn: Callable[[_T], _U], inp: LatestSlot[_T], *outs: LatestSlot[_U]) -> None:
        def body() -> None:
            while True:
                value = inp.take()
                result = fn(value)  # type: ignore[arg-type]
                for out in outs:
                    out.put(result)

        self._add(name, body, (inp,), outs)

    def _add(self, name: str, body: Callable[[], None], inputs: tuple[LatestSlot[Any], ...],
             outs: tuple[LatestSlot[Any], ...]) -> None:
        def run() -> None:
            try:
                body()
            except SlotClosed:
                pass
            except BaseException as exc:  # handed to the caller's thread by raise_error()
                with self._lock:
                    if self.error is None:
                        self.error, self.stage = exc, name
                for slot in self._slots:
                    slot.close()
            finally:
                for out in outs:
                    out.close()

        self._slots.extend(s for s in (*inputs, *outs) if s not in self._slots)
        self._threads.append(threading.Thread(target=run, name=f"vsr-{name}", daemon=True))

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Close every slot and wait for the stages; False when one is still busy after ``timeout``."""
        for slot in self._slots:
            slot.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.ident is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def raise_error(self) -> None:
        """Re-raise the first stage's exception; one not from vsr becomes a PipelineError."""
        exc = self.error
        if exc is None:
            return
        if isinstance(exc, (VsrError, KeyboardInterrupt)):
            raise exc
        raise PipelineError(f"{self.stage} stage failed: {type(exc).__name__}: {exc}") from exc
