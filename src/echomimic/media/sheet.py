"""Contact sheets: many frames tiled on one image, for eyeballing results and reports."""

from __future__ import annotations

import os
from typing import Sequence, Union

import cv2
import numpy as np
from PIL import Image

__all__ = ["contact_sheet", "save_png"]

_BACKGROUND = (24, 24, 24)


def _as_rgb(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            arr = np.clip(np.rint(arr * 255.0 if arr.max(initial=0) <= 1.0 else arr), 0, 255)
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {np.asarray(frame).shape}")
    return arr


def contact_sheet(
    frames: Sequence[np.ndarray],
    *,
    cols: int = 4,
    width: int = 1600,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Tile ``frames`` in a grid ``cols`` wide, ``width`` pixels across, as one RGB image.

    Each frame is scaled (keeping its aspect ratio) to fit a cell of ``width // cols`` pixels
    across and as tall as the tallest scaled frame, and centred in it on a dark background.
    ``labels`` (one per frame) are written in the top-left corner of each cell on a dark band.
    Frames may be RGB, RGBA (alpha dropped) or grayscale, ``uint8`` or float in [0, 1].
    """
    if not len(frames):
        raise ValueError("contact_sheet() needs at least one frame")
    if labels is not None and len(labels) != len(frames):
        raise ValueError(f"{len(labels)} labels for {len(frames)} frames")
    cols = max(1, min(int(cols), len(frames)))
    cell_w = max(1, int(width) // cols)
    imgs = [_as_rgb(f) for f in frames]
    cell_h = max(max(1, int(round(im.shape[0] * cell_w / im.shape[1]))) for im in imgs)
    rows = (len(imgs) + cols - 1) // cols
    sheet = np.empty((rows * cell_h, cols * cell_w, 3), np.uint8)
    sheet[:] = _BACKGROUND
    font_scale = max(0.35, cell_w / 500.0)
    thickness = max(1, int(round(font_scale * 1.5)))
    for i, im in enumerate(imgs):
        r, c = divmod(i, cols)
        scale = min(cell_w / im.shape[1], cell_h / im.shape[0])
        w = max(1, int(round(im.shape[1] * scale)))
        h = max(1, int(round(im.shape[0] * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(im, (w, h), interpolation=interp) if (w, h) != im.shape[1::-1] else im
        y0 = r * cell_h + (cell_h - h) // 2
        x0 = c * cell_w + (cell_w - w) // 2
        sheet[y0:y0 + h, x0:x0 + w] = small
        if labels is not None and labels[i]:
            text = str(labels[i])
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
            bx0, by0 = c * cell_w, r * cell_h
            band = sheet[by0:by0 + min(cell_h, th + base + 8), bx0:bx0 + min(cell_w, tw + 10)]
            band[:] = (band.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken for contrast
            cv2.putText(sheet, text, (bx0 + 5, by0 + th + 4), cv2.FONT_HERSHEY_SIMPLEX,
                        font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return sheet


def save_png(path: Union[str, "os.PathLike[str]"], rgb: np.ndarray) -> str:
    """Save an RGB (or grayscale) image as PNG; creates the folder. Returns the path written."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(_as_rgb(rgb)).save(path, format="PNG")
    return path
