"""Background work for the studio: newest-request-wins workers and a frame cache.

    LatestWorker   one QThread; submit() replaces any request not yet started (stale ones are
                   dropped, never computed); results come back as Qt signals (queued to the GUI)
    FrameCache     thread-safe LRU of decoded frames; edited frames are keyed by frame *and* the
                   semantics they were decoded from, so a stale result can never be shown, and an
                   edit drops exactly the frames it touched
    TaskThread     one-off job (encode, export) with progress and cancellation
"""
from __future__ import annotations

import threading
import traceback
from collections import OrderedDict

from PySide6.QtCore import QThread, Signal


class Cancelled(Exception):
    """Raised inside a task's progress callback when the user pressed Cancel."""


class LatestWorker(QThread):
    """Runs ``handler(request)`` for the newest request only; ``setup()`` runs first, in the thread."""

    done = Signal(object, object)     # (request, result)
    failed = Signal(object, object)   # (request, exception)

    def __init__(self, handler, parent=None):
        super().__init__(parent)
        self.handler = handler
        self._cond = threading.Condition()
        self._pending = None
        self._stop = False
        self.busy = False
        self.dropped = 0

    def submit(self, request):
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = request
            self._cond.notify()
        if not self.isRunning():
            self.start()

    def run(self):
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                request, self._pending = self._pending, None
                self.busy = True
            try:
                result = self.handler(request)
            except Exception as exc:  # every worker error reaches one notifier (the window)
                exc.traceback_text = traceback.format_exc()
                self.failed.emit(request, exc)
            else:
                self.done.emit(request, result)
            finally:
                self.busy = False

    def stop(self, wait_ms: int = 5000):
        with self._cond:
            self._stop = True
            self._cond.notify()
        self.wait(wait_ms)


class FrameCache:
    def __init__(self, max_items: int = 96):
        self.max_items = max_items
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                self.hits += 1
                return self._d[key]
            self.misses += 1
            return None

    def put(self, key, value):
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.max_items:
                self._d.popitem(last=False)

    def drop_frames(self, frames, kind: str = "edited"):
        """Drop cached ``kind`` frames among ``frames`` (keys are (kind, frame, ...))."""
        frames = {int(f) for f in frames}
        with self._lock:
            for k in [k for k in self._d if k[0] == kind and k[1] in frames]:
                del self._d[k]

    def clear(self):
        with self._lock:
            self._d.clear()

    def __len__(self):
        return len(self._d)

    def keys(self):
        with self._lock:
            return list(self._d)


class TaskThread(QThread):
    """Run ``fn(progress)`` once; ``progress(done, total)`` raises Cancelled after cancel()."""

    progressed = Signal(int, int)
    stage = Signal(str)
    succeeded = Signal(object)
    failed = Signal(object)
    cancelled = Signal()

    def __init__(self, fn, parent=None):
        super().__init__(parent)
        self.fn = fn
        self._cancel = threading.Event()

    def cancel(self):
        self._cancel.set()

    def progress(self, *args, **kwargs):
        if self._cancel.is_set():
            raise Cancelled()
        if args and isinstance(args[0], str):
            self.stage.emit(args[0])
        nums = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if len(nums) >= 2:
            self.progressed.emit(int(nums[0]), max(int(nums[1]), 1))
        elif len(nums) == 1:
            self.progressed.emit(int(round(float(nums[0]) * 1000)), 1000)

    def run(self):
        try:
            result = self.fn(self.progress)
        except Cancelled:
            self.cancelled.emit()
        except Exception as exc:
            if self._cancel.is_set():
                self.cancelled.emit()
            else:
                exc.traceback_text = traceback.format_exc()
                self.failed.emit(exc)
        else:
            self.succeeded.emit(result)
