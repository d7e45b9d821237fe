"""Compare an edited frame with its original: wipe composite and difference heat map (numpy only).

The preview pane's compare modes draw these arrays; keeping them free of Qt lets them be tested
(and reused, e.g. for an exported difference video) without a display.

    wipe_composite(original, edited, split)      H x W x 3 uint8: original left of the divider
    difference_heatmap(original, edited)         (H x W x 3 uint8 inferno image, max |difference|)
    match_size(image, (H, W))                    nearest-neighbour resize so two frames line up
    invented_tint(edited, invented)              (edited with the invented pixels tinted, their share)
"""
from __future__ import annotations

import numpy as np

# matplotlib's 'inferno' sampled at 33 evenly spaced points (every 8th of its 256 entries, rounded):
# perceptually uniform and readable in grey scale. Interpolating these reproduces the full table
# to within 1.5 levels, without importing matplotlib into the editor.
_INFERNO_ANCHORS = np.array([
    (0, 0, 4), (4, 3, 18), (11, 7, 36), (21, 11, 55), (33, 12, 74), (47, 10, 91),
    (61, 9, 101), (74, 12, 107), (87, 16, 110), (100, 21, 110), (113, 25, 110), (125, 30, 109),
    (138, 34, 106), (151, 39, 102), (163, 44, 97), (176, 49, 91), (188, 55, 84), (198, 61, 77),
    (208, 69, 69), (218, 78, 60), (227, 89, 51), (235, 100, 41), (241, 113, 31), (246, 126, 20),
    (249, 140, 10), (251, 155, 6), (252, 170, 15), (251, 186, 31), (249, 201, 50), (245, 217, 73),
    (242, 232, 101), (243, 245, 134), (252, 255, 164),
], float)


def _build_lut() -> np.ndarray:
    xs = np.round(np.linspace(0, 255, len(_INFERNO_ANCHORS)))
    t = np.arange(256)
    lut = np.stack([np.interp(t, xs, _INFERNO_ANCHORS[:, c]) for c in range(3)], 1)
    return np.round(lut).astype(np.uint8)


INFERNO_LUT = _build_lut()          # 256 x 3 uint8; entry 0 = no difference, 255 = the largest


def match_size(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """H' x W' x C -> H x W x C by nearest neighbour (a no-op when the size already matches)."""
    h, w = int(shape[0]), int(shape[1])
    if image.shape[:2] == (h, w):
        return image
    ys = np.minimum((np.arange(h) + 0.5) * image.shape[0] / h, image.shape[0] - 1).astype(int)
    xs = np.minimum((np.arange(w) + 0.5) * image.shape[1] / w, image.shape[1] - 1).astype(int)
    return image[ys][:, xs]


def _pair(original: np.ndarray, edited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    o = np.asarray(original)
    e = match_size(np.asarray(edited), o.shape[:2])
    if o.shape != e.shape:
        raise ValueError(f"cannot compare images of shapes {o.shape} and {e.shape}")
    return o, e


def wipe_column(width: int, split: float) -> int:
    """The first column of the edited side for a divider at ``split`` (0 = left edge, 1 = right)."""
    return int(round(float(np.clip(split, 0.0, 1.0)) * width))


def wipe_composite(original: np.ndarray, edited: np.ndarray, split: float) -> np.ndarray:
    """One image from two H x W x C frames: columns left of the divider from ``original``, the rest
    from ``edited``. ``edited`` of another size is resized to ``original``'s first."""
    o, e = _pair(original, edited)
    x = wipe_column(o.shape[1], split)
    out = e.copy()
    out[:, :x] = o[:, :x]
    return out


def difference_map(original: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """H x W float32: |edited - original| per pixel, averaged over the colour channels (0..255)."""
    o, e = _pair(original, edited)
    d = np.abs(e.astype(np.int16) - o.astype(np.int16)).astype(np.float32)
    return d.mean(-1) if d.ndim == 3 else d


def difference_heatmap(original: np.ndarray, edited: np.ndarray,
                       min_scale: float = 8.0) -> tuple[np.ndarray, float]:
    """(H x W x 3 uint8 heat map, max difference) of two frames.

    The colour scale runs from no difference (``INFERNO_LUT[0]``) to the frame's largest difference
    (``INFERNO_LUT[255]``), so where an edit acts is visible whatever its size; it never spans less
    than ``min_scale`` levels, so that coding noise of a level or two is not stretched to full
    brightness. The returned max (0..255, mean over RGB) is what the legend prints.
    """
    d = difference_map(original, edited)
    peak = float(d.max()) if d.size else 0.0
    scale = max(peak, float(min_scale), 1e-6)
    idx = np.clip(np.round(d * (255.0 / scale)), 0, 255).astype(np.uint8)
    return INFERNO_LUT[idx], peak


INVENTED_COLOUR = np.array([255.0, 0.0, 200.0])   # magenta: rare in frames of people, seen over skin and cloth
INVENTED_ALPHA = 0.6


def invented_tint(edited: np.ndarray, invented: np.ndarray) -> tuple[np.ndarray, float]:
    """The edited frame (H x W x 3 uint8) with the pixels of ``invented`` (H x W bool, the decoder's
    guesses: what no key picture saw) blended INVENTED_ALPHA of the way to INVENTED_COLOUR, and the
    share of the frame they cover (0..1). A mask of another size is fitted first (``match_size``)."""
    mask = match_size(np.asarray(invented, bool), edited.shape[:2])
    out = edited.astype(np.float32)
    out[mask] = (1 - INVENTED_ALPHA) * out[mask] + INVENTED_ALPHA * INVENTED_COLOUR
    return np.round(out).astype(np.uint8), float(mask.mean()) if mask.size else 0.0
