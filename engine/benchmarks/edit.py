"""``python main.py bench --edit``: what a large edit does to the decoded video (the studio's re-export).

No edited video has a ground truth, so the figures say how the edited video holds together beside the
unedited one, on the same bitstream (``--file``, default the bundled sample):

* steps: the mean absolute change from one frame to the next (0..255, all channels), into a group's first
  frame and elsewhere. A frame that jumps back to the unedited pose (the key frames did, until session 26)
  or a key's texture that does not join the next one shows here.
* invented: the share of each frame drawn where no key picture saw what is there
  (``Decoder.decode_frame(..., with_invented=True)``), mean and largest.

The edits (EDITS) raise the left arm and bend the right elbow on every frame, the large edit the studio's
sample invites. Prints a markdown table.
"""
from __future__ import annotations

import time

import numpy as np

from engine.studio.edits import apply_to_bitstream, loads

# The sample's large arm edit: left shoulder out 50 degrees, right elbow 40 degrees in, on every frame.
EDITS = ('{"edits": [{"semantic": "left_shoulder.z", "offset": 50, "unit": "deg", "frames": [0, %(last)d]},'
         ' {"semantic": "right_elbow.y", "offset": -40, "unit": "deg", "frames": [0, %(last)d]}]}')


def frame_steps(video: np.ndarray, starts) -> tuple[float, float]:
    """Mean absolute change into the frames that open a group (``starts``, the first excluded) and into
    the others: (at a group's start, elsewhere). NaN where there is none."""
    step = np.abs(np.diff(video.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))      # into frame i + 1
    opens = np.isin(np.arange(1, len(video)), list(starts))
    at = float(step[opens].mean()) if opens.any() else float("nan")
    off = float(step[~opens].mean()) if (~opens).any() else float("nan")
    return at, off


def measure(bs, decoder_factory) -> dict:
    """Decode ``bs`` frame by frame: the video, the invented share per frame and the seconds it took."""
    dec = decoder_factory(bs)
    t = time.perf_counter()
    frames, shares = [], []
    for i in range(bs.n_frames):
        img, guess = dec.decode_frame(i, with_invented=True)
        frames.append(img)
        shares.append(float(np.asarray(guess).mean()))
    video = np.stack(frames)
    at, off = frame_steps(video, [g.start for g in bs.gops])
    return {"video": video, "seconds": time.perf_counter() - t, "step_at": at, "step_off": off,
            "invented_mean": float(np.mean(shares)), "invented_max": float(np.max(shares))}


def run(args) -> int:
    from engine.codec import container
    from engine.fileio import ASSETS
    from engine.synthesis.decoder import Decoder
    path = args.file or str(ASSETS / "sample.ihvc")
    bs = container.read(path)
    edited = apply_to_bitstream(bs, loads(EDITS % {"last": bs.n_frames - 1}, "bench --edit"), "bench --edit")
    rows = []
    for name, b in (("as coded", bs), ("edited", edited)):
        m = measure(b, lambda x: Decoder(x, device=args.device))
        rows.append((name, m))
    print(f"\n{path}: {bs.n_frames} frames, {len(bs.gops)} key pictures; edit: left shoulder +50, right elbow -40 "
          "degrees on every frame\n")
    print("| video | step into a group's first frame | step elsewhere | invented, mean | invented, largest | decode s |")
    print("|---|---|---|---|---|---|")
    for name, m in rows:
        print(f"| {name} | {m['step_at']:.2f} | {m['step_off']:.2f} | {100 * m['invented_mean']:.2f} % | "
              f"{100 * m['invented_max']:.2f} % | {m['seconds']:.1f} |")
    return 0
