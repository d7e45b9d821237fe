"""Work spread over the CPU's cores in forked processes, one PyTorch thread each.

The encoder's closed loop (engine.analysis.closed_loop) is many thousands of small PyTorch operations
per batch of frames: Python holds the GIL between them, so threads do not overlap them (a thread pool
bought 4 %), and two intra-op threads on two cores spend much of their time waiting on each other.
Independent pieces of work (a group of pictures' frames) in separate processes do overlap.

    with ForkPool(state, workers=cpu_workers(len(items))) as pool:
        results = list(pool.map(fn, items))     # fn(state, item), a module-level function

The processes are forked once per pool and inherit ``state`` (decoders, frames, the body model) without
copying or pickling it; only ``fn``'s items and results travel. Every call runs on one PyTorch thread,
in a worker or, with one worker, in this process: a result does not depend on how many cores the
machine has. Off Linux (Windows has no fork; macOS' system frameworks do not survive one), on a CUDA
device (neither does CUDA) or with ``IHVC_WORKERS=1``, everything runs here, in order.

A fork copies every file descriptor this process holds, and other threads here start subprocesses (the key
pictures' VVC encoder beside the key search, VMAF beside ``eval``'s next encode). A worker forked while a
subprocess runs keeps a copy of that subprocess's pipes, so the subprocess never sees the end of its input,
or this process never sees the end of its output: both wait for ever (seen once, in ``eval --rates``). So
subprocesses start through :func:`run`, which holds ``GATE`` shared for the subprocess's whole life, and a
pool forks all its workers at once, holding ``GATE`` alone (it waits for running subprocesses to end).
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

_STATE = None             # the state of the pool being forked: what a worker's fn receives


class _Gate:
    """Many holders ``shared()`` (subprocesses running) or one ``alone()`` (a pool forking); a waiting fork
    goes before new subprocesses."""

    def __init__(self):
        self._cond = threading.Condition()
        self._shared = 0
        self._alone = False
        self._waiting = 0

    def shared(self):
        return _Hold(self, False)

    def alone(self):
        return _Hold(self, True)


class _Hold:
    def __init__(self, gate: _Gate, alone: bool):
        self.gate, self.alone = gate, alone

    def __enter__(self):
        g = self.gate
        with g._cond:
            if self.alone:
                g._waiting += 1
                g._cond.wait_for(lambda: not g._alone and g._shared == 0)
                g._waiting -= 1
                g._alone = True
            else:
                g._cond.wait_for(lambda: not g._alone and g._waiting == 0)
                g._shared += 1

    def __exit__(self, *exc):
        g = self.gate
        with g._cond:
            if self.alone:
                g._alone = False
            else:
                g._shared -= 1
            g._cond.notify_all()


GATE = _Gate()


def run(cmd, input: bytes | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, input=input, capture_output=True, **kwargs)`` while no worker pool forks (see
    the module): every subprocess of the engine starts here."""
    with GATE.shared():
        return subprocess.run(cmd, input=input, capture_output=True, **kwargs)


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux's MemAvailable), or None where it does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_workers(limit: int | None = None) -> int:
    """The processes worth starting: the cores this process may use (``IHVC_WORKERS`` overrides), at most
    ``limit`` (the pieces of work there are)."""
    env = os.environ.get("IHVC_WORKERS", "").strip()
    if env.isdigit() and int(env) > 0:
        n = int(env)
    else:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n, limit if limit is not None else n))


class torch_threads:
    """PyTorch on ``n`` intra-op threads for the duration (restored after). Small operations run faster on
    one: the fit of 160 TED frames took 3.8 s on one thread, 8.0 s on two of a shared 2-core CPU."""

    def __init__(self, n: int = 1):
        self.n = n

    def __enter__(self):
        import torch
        self.prev = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch
        torch.set_num_threads(self.prev)


def _start_worker(nice: int = 0):
    import torch
    torch.set_num_threads(1)
    if nice:
        os.nice(nice)


def _noop():
    return None


def _call(fn: Callable, item):
    return fn(_STATE, item)


class ForkPool:
    """``map(fn, items)`` -> fn(state, item) for each, in order, over ``workers`` forked processes (see the module)."""

    def __init__(self, state, workers: int = 1, device=None, nice: int = 0):
        """``nice``: the workers' niceness above this process's (work that should yield the cores to other
        work of this process's, a subprocess's; in this process, with one worker, none)."""
        self.state = state
        self.pool = None
        cuda = device is not None and str(device).startswith("cuda")
        if cuda or not sys.platform.startswith("linux"):
            workers = 1
        self.workers = workers                  # 1: everything runs in this process
        if workers > 1:
            global _STATE
            # Every worker forks now, inside the first submit, while no subprocess runs (see the module).
            with GATE.alone():
                _STATE = state
                self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                initializer=_start_worker, initargs=(nice,))
                self.pool.submit(_noop).result()

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        """fn(state, item) for each item, yielded in order as they are done."""
        items = list(items)
        if self.pool is None:
            for it in items:
                with torch_threads(1):
                    out = fn(self.state, it)
                yield out
            return
        try:
            yield from self.pool.map(_call, [fn] * len(items), items)
        except BrokenProcessPool:
            raise RuntimeError("a worker process of the encoder died (out of memory?); "
                               "IHVC_WORKERS=1 runs everything in one process") from None

    def close(self):
        global _STATE
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if _STATE is self.state:
            _STATE = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def release_memory() -> None:
    """Give the memory this process has freed back to the system (a collection, then glibc's
    ``malloc_trim``): freed arrays otherwise stay in the heap, and processes forked later inherit it.
    Nothing where there is no glibc."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
