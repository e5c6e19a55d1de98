"""Control-image preprocessors: a picture in, the condition a ControlNet reads out.

Two ship and need no model: `canny` (the edges lllyasviel's canny ControlNets were trained on:
OpenCV's Canny at thresholds 100 and 200) and `mask` (the world's layout: the silhouette of what
differs from the background, what the world ControlNet reads). The rest come from `controlnet_aux`
(depth, pose, line art, ...), which fetches its own annotator weights; it is an optional extra.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spacetime.checks import PREPROCESSORS
from spacetime.errors import ArgumentValueError, SpacetimeError

# controlnet_aux's detectors by the name the flag takes, with their hub repository
AUX = {
    "depth": "MidasDetector",
    "normal": "NormalBaeDetector",
    "openpose": "OpenposeDetector",
    "lineart": "LineartDetector",
    "hed": "HEDdetector",
    "mlsd": "MLSDdetector",
    "softedge": "PidiNetDetector",
}
AUX_REPO = "lllyasviel/Annotators"
NAMES = PREPROCESSORS


def canny(image: np.ndarray, low: float = 100, high: float = 200) -> np.ndarray:
    """Canny edges (Canny 1986) as OpenCV computes them (cv2.Canny: 3x3 Sobel per channel, the
    channel of largest L1 gradient, non-maximum suppression in four directions, hysteresis over
    8-connected pixels); uint8 (h, w, 3) RGB in, white edges on black out, (h, w, 3)."""
    from scipy import ndimage

    pixels = _rgb(image).astype(np.int32)
    padded = np.pad(pixels, ((1, 1), (1, 1), (0, 0)), mode="edge")  # OpenCV replicates the border

    def shifted(dy: int, dx: int) -> np.ndarray:
        h, w = pixels.shape[:2]
        return padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (shifted(-1, 1) + 2 * shifted(0, 1) + shifted(1, 1)) - (
        shifted(-1, -1) + 2 * shifted(0, -1) + shifted(1, -1)
    )
    gy = (shifted(1, -1) + 2 * shifted(1, 0) + shifted(1, 1)) - (
        shifted(-1, -1) + 2 * shifted(-1, 0) + shifted(-1, 1)
    )
    magnitude = np.abs(gx) + np.abs(gy)
    best = magnitude.argmax(axis=2)[..., None]  # OpenCV keeps the strongest channel's gradient
    gx, gy = (np.take_along_axis(g, best, 2)[..., 0] for g in (gx, gy))
    m = np.take_along_axis(magnitude, best, 2)[..., 0]

    # neighbours' magnitudes, zero outside the image (as OpenCV's padded buffer)
    mp = np.pad(m, 1)

    def at(dy: int, dx: int) -> np.ndarray:
        return mp[1 + dy : 1 + dy + m.shape[0], 1 + dx : 1 + dx + m.shape[1]]

    # OpenCV's fixed-point direction test: tan 22.5 and tan 67.5 = tan 22.5 + 2, scaled by 2^15
    ax, ay = np.abs(gx).astype(np.int64), np.abs(gy).astype(np.int64) << 15
    tg22x = ax * int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg22x + (ax << 16))
    s = np.where((gx ^ gy) < 0, -1, 1)
    diagonal_a = np.where(s < 0, at(-1, 1), at(-1, -1))  # (x - s, y - 1)
    diagonal_b = np.where(s < 0, at(1, -1), at(1, 1))  # (x + s, y + 1)
    local_max = np.where(
        horizontal,
        (m > at(0, -1)) & (m >= at(0, 1)),
        np.where(vertical, (m > at(-1, 0)) & (m >= at(1, 0)), (m > diagonal_a) & (m > diagonal_b)),
    )
    low, high = np.floor(low), np.floor(high)
    candidate = local_max & (m > low)
    strong = candidate & (m > high)
    labels, _ = ndimage.label(candidate, structure=np.ones((3, 3)))
    keep = np.unique(labels[strong])
    edges = np.isin(labels, keep[keep > 0])
    return np.repeat((edges * 255).astype(np.uint8)[..., None], 3, axis=2)


def mask(image: np.ndarray, tolerance: int = 48) -> np.ndarray:
    """The world's layout pass: white where a pixel differs from the background (the median
    colour of the image's border) by more than `tolerance` in any channel, black elsewhere."""
    pixels = _rgb(image).astype(np.int32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    foreground = (np.abs(pixels - background) > tolerance).any(axis=2)
    return np.repeat((foreground * 255).astype(np.uint8)[..., None], 3, axis=2)


def preprocessor(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """The preprocessor `name` names (NAMES): uint8 (h, w, 3) in, uint8 (h, w, 3) out."""
    if name == "canny":
        return canny
    if name == "mask":
        return mask
    if name not in AUX:
        raise ArgumentValueError(
            f"unknown preprocessor {name!r}; expected one of {', '.join(NAMES)}"
        )
    try:
        import controlnet_aux
    except ImportError:
        raise SpacetimeError(
            f"the {name!r} preprocessor comes from controlnet_aux, which is not installed: "
            "pip install 'spacetime[control-aux]' (its annotator weights download on first use), "
            "or give a ready control image"
        ) from None
    detector = getattr(controlnet_aux, AUX[name]).from_pretrained(AUX_REPO)

    def run(image: np.ndarray) -> np.ndarray:
        from PIL import Image

        out = detector(Image.fromarray(_rgb(image)))
        return np.asarray(out.convert("RGB").resize(image.shape[1::-1]))

    return run


def _rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ArgumentValueError(
            f"expected a uint8 (h, w, 3) RGB image, got {array.dtype} {array.shape}"
        )
    return array
