"""engine/workers.py: forked worker pools and the gate that keeps them from copying a running subprocess's pipes."""
import sys
import threading
import time

import pytest

from engine import workers


def _scaled(state, x):
    return state["k"] * x


def test_pool_maps_in_order_on_one_or_two_processes(monkeypatch):
    for n in ("1", "2"):
        monkeypatch.setenv("IHVC_WORKERS", n)
        with workers.ForkPool({"k": 3}, workers.cpu_workers(8)) as pool:
            assert pool.workers == (1 if n == "1" else 2)
            assert list(pool.map(_scaled, range(7))) == [3 * x for x in range(7)]
    with workers.ForkPool({"k": 1}, 2, device="cuda:0") as pool:       # CUDA does not survive a fork: no workers
        assert pool.workers == 1 and list(pool.map(_scaled, [5])) == [5]


def _niceness(state, x):
    import os
    return os.nice(0)


def test_a_pool_s_workers_can_yield_the_cores_and_this_process_keeps_its_priority(monkeypatch):
    """The closed loop's first steps run on workers that yield to the key pictures' encoder beside them."""
    import os
    own = os.nice(0)
    monkeypatch.setenv("IHVC_WORKERS", "2")
    with workers.ForkPool({}, 2, nice=5) as pool:
        assert set(pool.map(_niceness, range(4))) == {min(own + 5, 19)}
    monkeypatch.setenv("IHVC_WORKERS", "1")
    with workers.ForkPool({}, 1, nice=5) as pool:                  # one worker: this process, left as it is
        assert list(pool.map(_niceness, [0])) == [own]
    assert os.nice(0) == own


def _die(state, x):
    import os
    os._exit(3)


def test_a_dead_worker_is_one_line_not_a_hang():
    with workers.ForkPool({}, 2) as pool:
        with pytest.raises(RuntimeError, match="worker process"):
            list(pool.map(_die, [1, 2]))


def test_a_pool_forks_only_when_no_subprocess_runs():
    """A worker forked while a subprocess runs would keep a copy of its pipes (and a subprocess waiting for the
    end of its input would wait for ever): the pool waits for running subprocesses, and subprocesses started
    while it forks wait for it."""
    when = {}

    def sub():
        workers.run([sys.executable, "-c", "import time; time.sleep(1.0)"])
        when["sub done"] = time.monotonic()
    t = threading.Thread(target=sub)
    t.start()
    t0 = time.monotonic()
    while workers.GATE._shared == 0 and time.monotonic() - t0 < 30:     # the subprocess has started
        time.sleep(0.01)
    assert workers.GATE._shared == 1
    with workers.ForkPool({"k": 2}, 2) as pool:
        when["forked"] = time.monotonic()
        assert list(pool.map(_scaled, [1, 2])) == [2, 4]
    t.join()
    assert when["sub done"] <= when["forked"]
    res = workers.run([sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())"], input=b"ok")
    assert res.returncode == 0 and res.stdout == b"OK" and workers.GATE._shared == 0


def test_finding_the_ffmpeg_binary_holds_the_gate(monkeypatch):
    """imageio-ffmpeg runs its binary once to check it, on the first call: a pool forked meanwhile would keep
    that check's pipe open and the call would never return (it hung an encode that reused an analysis, whose
    key-search pool forks while the first key pictures start on threads)."""
    import imageio_ffmpeg
    from engine.codec import keypicture
    seen = []
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: seen.append(workers.GATE._shared) or "ffmpeg")
    keypicture.ffmpeg_exe.cache_clear()
    try:
        assert keypicture.ffmpeg_exe() == "ffmpeg" and seen == [1]
    finally:
        keypicture.ffmpeg_exe.cache_clear()
    assert workers.GATE._shared == 0
