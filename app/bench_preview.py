"""Studio benchmark (``python main.py bench --preview`` or ``python -m app.bench_preview``).

1. Edit-to-preview latency: a slider release on the current frame until the edited preview of
   that exact edit is shown (the real MainWindow, the real analytic decoder, 384 x 384 sample),
   median over ~30 edits on different frames.
   Drafts: during a slider drag the studio decodes small frames (app/services.py, at most 192 px);
   measured as drag step -> draft shown, release -> full frame shown, and the decoder alone at
   both sizes (interleaved, same edits).
2. Memory while scrubbing: RSS at the start and end of (default) one minute of scrubbing through
   the sample at 25 frames per second (every frame requests a decode; newest wins).

Prints a markdown table. Options (python main.py bench --preview): --edits (30),
--scrub-seconds (60), --file (assets/sample.ihvc).
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _wait(app, cond, timeout: float) -> bool:
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            return False
        app.processEvents()
        time.sleep(0.001)
    return True


def measure(path, device=None, edits: int = 30, scrub_s: float = 60.0, preview_size: int = 384,
            decoder: str = "analytic") -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen" if not os.environ.get("DISPLAY") else "")
    from .cli_studio import create_app
    app = create_app()
    from .main_window import MainWindow
    from .preferences import Preferences
    prefs = Preferences(device=device or "auto", decoder=decoder, preview_size=preview_size)
    win = MainWindow(prefs)
    win.show()
    t0 = time.perf_counter()
    if not win.open_path(path):
        raise SystemExit(f"cannot open {path}: {win.errors}")
    ad, pane = win.adapter, win.preview_pane
    shown = {"serial": -1, "count": 0}

    def on_shown(serial, frame):
        shown["serial"] = serial
        shown["count"] += 1
    pane.shown.connect(on_shown)
    if not _wait(app, lambda: pane.frame == 0, 600):
        raise SystemExit(f"no preview: {win.errors}")
    first = time.perf_counter() - t0
    doc = ad.doc
    n = doc.n_frames
    name = "left_shoulder.z"
    row = win.panel.row(name)
    lat = []
    for k in range(edits):
        f = (k * 37 + 5) % n
        ad.set_frame(f)
        _wait(app, lambda: pane.frame == f and shown["serial"] == win.preview.serial, 120)
        _wait(app, lambda: not win.mesh.worker.busy, 30)
        t_settle = time.perf_counter() + 0.4                           # a user's pause before the drag:
        _wait(app, lambda: time.perf_counter() > t_settle, 5)          # lets the 3D view finish drawing
        delta = 8 if k % 2 == 0 else -8
        t = time.perf_counter()
        row.slider.setValue(row.slider.value() + delta)              # slider released at a new value
        target = win.preview.serial
        ok = _wait(app, lambda: shown["serial"] >= target, 120)
        if ok:
            lat.append((time.perf_counter() - t) * 1000.0)
    # drafts: two drag steps (slider held) and the release, per frame
    drag_lat, release_lat, drafts_ok = [], [], 0
    for k in range(edits):
        f = (k * 53 + 11) % n
        ad.set_frame(f)
        _wait(app, lambda: pane.frame == f and shown["serial"] == win.preview.serial, 120)
        _wait(app, lambda: not win.mesh.worker.busy, 30)
        t_settle = time.perf_counter() + 0.4
        _wait(app, lambda: time.perf_counter() > t_settle, 5)
        row.slider.setSliderDown(True)
        for delta in (4, 8):
            t = time.perf_counter()
            row.slider.setValue(row.slider.value() + (delta if k % 2 == 0 else -delta))
            target = win.preview.serial
            if _wait(app, lambda: shown["serial"] >= target, 120):
                drag_lat.append((time.perf_counter() - t) * 1000.0)
                drafts_ok += bool(pane.draft)
        row.slider.setSliderDown(False)
        t = time.perf_counter()
        row.slider.sliderReleased.emit()
        target = win.preview.serial
        if _wait(app, lambda: shown["serial"] >= target and not pane.draft, 120):
            release_lat.append((time.perf_counter() - t) * 1000.0)
    # the decoder alone on the same kind of edit (what the studio adds is the difference),
    # full size and draft interleaved so that a busy machine slows both alike
    _wait(app, lambda: not win.preview.worker.busy and not win.mesh.worker.busy, 60)
    dec, alone, alone_draft = win.preview._decoder, [], []
    draft_side = win.preview.draft_side()
    draft_dec = win.preview._draft_decoder or dec.scaled(draft_side)
    for k in range(min(10, edits)):
        f = (k * 37 + 5) % n
        row_values = doc.edited[f].copy()
        row_values[doc.index(name)] += 0.16 * (1 + k % 3)
        draft_dec.decode_frame(f, row_values - 0.01)             # the GOP's draft key state, warm
        for d, out in ((dec, alone), (draft_dec, alone_draft)):
            t = time.perf_counter()
            d.decode_frame(f, row_values)
            out.append((time.perf_counter() - t) * 1000.0)
    # scrubbing
    rss0 = rss_mb()
    peak = rss0
    t_end = time.perf_counter() + scrub_s
    f = 0
    t_start = time.perf_counter()
    marks, samples = [0.25, 0.5, 0.75], []
    frames_shown_before = shown["count"]
    requests_before = win.preview.serial
    dropped_before = win.preview.worker.dropped
    while time.perf_counter() < t_end:
        f = (f + 1) % n
        ad.set_frame(f)
        t_next = time.perf_counter() + 0.04
        while time.perf_counter() < t_next:
            app.processEvents()
            time.sleep(0.002)
        now = rss_mb()
        peak = max(peak, now)
        if marks and time.perf_counter() - t_start >= marks[0] * scrub_s:
            samples.append(now)
            marks.pop(0)
    _wait(app, lambda: shown["serial"] == win.preview.serial, 60)
    rss1 = rss_mb()
    result = {
        "first_preview_s": first, "edits": len(lat), "latency_median_ms": statistics.median(lat) if lat else float("nan"),
        "latency_p90_ms": sorted(lat)[int(0.9 * (len(lat) - 1))] if lat else float("nan"),
        "latency_min_ms": min(lat) if lat else float("nan"),
        "decoder_alone_ms": statistics.median(alone) if alone else float("nan"),
        "decoder_draft_ms": statistics.median(alone_draft) if alone_draft else float("nan"),
        "draft_side": draft_side, "drag_steps": len(drag_lat), "drafts_shown": drafts_ok,
        "drag_median_ms": statistics.median(drag_lat) if drag_lat else float("nan"),
        "release_median_ms": statistics.median(release_lat) if release_lat else float("nan"),
        "scrub_s": scrub_s, "scrub_requests": win.preview.serial - requests_before,
        "previews_shown": shown["count"] - frames_shown_before,
        "stale_dropped": win.preview.worker.dropped - dropped_before, "rss_start_mb": rss0, "rss_end_mb": rss1, "rss_peak_mb": peak, "rss_quarters": samples,
        "cache_items": len(win.preview.cache), "device": str(getattr(win.preview._decoder, "device", device)),
        "size": f"{doc.bitstream.width}x{doc.bitstream.height}", "frames": n,
        "decoder": "learned" if getattr(win.preview._decoder, "refiner", None) is not None else "analytic",
        "note": getattr(win.preview._decoder, "note", ""),
    }
    doc.mark_saved(doc.path)
    win.close()
    return result


def table(r: dict) -> str:
    rows = [
        ("clip", f"{r['frames']} frames, {r['size']}, {r['decoder']} decoder on {r['device']}"
                 + (f" ({r['note']})" if r.get("note") else "")),
        ("first preview after open (decoder + body model start)", f"{r['first_preview_s']:.1f} s"),
        (f"edit-to-preview latency, median of {r['edits']} (target <= 150 ms)", f"{r['latency_median_ms']:.0f} ms"),
        ("Decoder.decode_frame of an edited frame alone, median", f"{r['decoder_alone_ms']:.0f} ms"),
        ("edit-to-preview latency, min / p90", f"{r['latency_min_ms']:.0f} / {r['latency_p90_ms']:.0f} ms"),
        (f"drag step -> draft preview ({r['draft_side']} px) shown, median of {r['drag_steps']} "
         f"({r['drafts_shown']} shown as draft; the 3D body follows at most every 0.5 s)",
         f"{r['drag_median_ms']:.0f} ms"),
        ("slider release -> full-size preview shown, median", f"{r['release_median_ms']:.0f} ms"),
        (f"Decoder.decode_frame alone, draft {r['draft_side']} px / full, median (interleaved)",
         f"{r['decoder_draft_ms']:.0f} / {r['decoder_alone_ms']:.0f} ms"),
        (f"scrubbing {r['scrub_s']:.0f} s at 25 fps: requests / previews shown / stale dropped unseen",
         f"{r['scrub_requests']} / {r['previews_shown']} / {r['stale_dropped']}"),
        ("RSS start -> end of scrubbing (peak)", f"{r['rss_start_mb']:.0f} -> {r['rss_end_mb']:.0f} MB ({r['rss_peak_mb']:.0f})"),
        ("RSS at 25 / 50 / 75 % of the scrub", " / ".join(f"{x:.0f}" for x in r["rss_quarters"]) + " MB"),
        ("frame cache entries at end", f"{r['cache_items']}"),
    ]
    out = ["| measure | value |", "| --- | --- |"] + [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(out)


def run(args) -> int:
    root = Path(__file__).resolve().parent.parent
    path = getattr(args, "file", None) or str(root / "assets" / "sample.ihvc")
    decoders = (getattr(args, "preview_decoders", None) or "analytic,learned").split(",")
    for decoder in decoders:
        if decoder not in ("analytic", "learned"):
            raise SystemExit(f"unknown preview decoder {decoder!r}: analytic or learned")
    if len(decoders) > 1:
        # one process per decoder: Qt allows one QApplication, and the RSS figures stay separate
        for decoder in decoders:
            _run_child(path, args, decoder)
        return 0
    r = measure(path, getattr(args, "device", None), getattr(args, "edits", None) or 30,
                getattr(args, "scrub_seconds", None) or 60.0, decoder=decoders[0])
    print(f"\n#### {r['decoder']} decoder\n")
    print(table(r))
    return 0


def _run_child(path, args, decoder: str) -> None:
    import subprocess
    import sys
    cmd = [sys.executable, str(Path(__file__).resolve().parent.parent / "main.py"), "bench", "--preview",
           "--file", str(path), "--preview-decoders", decoder]
    for flag, name in (("--device", "device"), ("--edits", "edits"), ("--scrub-seconds", "scrub_seconds")):
        if getattr(args, name, None) is not None:
            cmd += [flag, str(getattr(args, name))]
    subprocess.run(cmd, check=False)
