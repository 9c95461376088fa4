"""Decode and validate still images.

Every image the engine sees goes through :func:`load_image`: the format is recognised from the
file's content (never its extension), the pixel count is checked against a limit *before* any
pixel is decoded, EXIF orientation is applied, colour is normalised to 8-bit sRGB-ish RGB and
transparency is flattened onto white. User-caused problems raise
:class:`~echomimic.errors.ImageError` (or :class:`~echomimic.errors.ImageTooLarge`) with a
one-line message that names the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from typing import Literal, Union

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..errors import ImageError, ImageTooLarge

__all__ = ["load_image", "resize_max_side", "sniff_kind", "MIN_SIDE", "DEFAULT_MAX_PIXELS"]

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

#: Default pixel-count limit of :func:`load_image` (a 4096 x 4096 image).
DEFAULT_MAX_PIXELS = 4096 * 4096

#: Smallest accepted side, in pixels. A face needs some pixels to be found and animated.
MIN_SIDE = 64

# Pillow decoders we accept. Restricting the list keeps rarely used (and rarely audited)
# decoders away from untrusted input. "MPO" is the multi-picture JPEG many phones write.
_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF", "AVIF")
_formats_ready: list[str] = []


def _open_formats() -> list[str]:
    """The accepted formats this Pillow build can open (plugins registered on first call)."""
    if not _formats_ready:
        Image.init()
        _formats_ready.extend(f for f in _FORMATS if f in Image.OPEN)
    return _formats_ready


def _describe(src: ImageSource) -> str:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"image data ({len(src)} bytes)"
    return f"image {os.fspath(src)!r}"


def _read_source(src: ImageSource) -> tuple[bytes, str]:
    """Return the raw bytes of ``src`` and a short description used in messages."""
    name = _describe(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), name
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"load_image() takes a path or bytes, not {type(src).__name__}")
    path = os.fspath(src)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    return data, name


def _too_large(name: str, width: int, height: int, max_pixels: int) -> ImageTooLarge:
    mp = width * height / 1e6
    return ImageTooLarge(
        f"{name} is {width}x{height} ({mp:.1f} megapixels), more than the limit of "
        f"{max_pixels} pixels ({max_pixels / 1e6:.1f} megapixels); downscale it first"
    )


def _is_srgb(profile_bytes: bytes) -> bool:
    try:
        prof = ImageCms.ImageCmsProfile(io.BytesIO(profile_bytes))
        desc = ImageCms.getProfileDescription(prof) or ""
    except Exception:
        return True  # unreadable profile: treat as sRGB (i.e. ignore it)
    return "srgb" in desc.lower().replace(" ", "").replace("-", "")


_SRGB = None


def _apply_icc(img: Image.Image) -> Image.Image | None:
    """Convert ``img`` to sRGB with its embedded ICC profile; ``None`` when not needed/possible.

    Applied to CMYK images (whose raw values are meaningless without a profile) and to RGB
    images tagged with a non-sRGB profile (e.g. Display P3 from phones). sRGB-tagged and
    untagged images are left untouched so their pixels stay exactly as stored.
    """
    global _SRGB
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return None
    if img.mode != "CMYK" and _is_srgb(icc):
        return None
    try:
        if _SRGB is None:
            _SRGB = ImageCms.createProfile("sRGB")
        src_prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(img, src_prof, _SRGB, outputMode=out_mode)
    except Exception:
        return None  # a broken profile: fall back to Pillow's plain conversion


def _to_uint8_gray(arr: np.ndarray) -> np.ndarray:
    """Scale a high-bit-depth single-channel array to uint8."""
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        a = np.nan_to_num(arr.astype(np.float64))
        hi = float(a.max()) if a.size else 1.0
        scale = 255.0 if hi <= 1.0 else 255.0 / hi
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    a = arr.astype(np.int64)
    hi = int(a.max()) if a.size else 0
    if hi <= 255 and arr.dtype.itemsize == 4:  # mode "I" holding 8-bit values
        return np.clip(a, 0, 255).astype(np.uint8)
    # 16-bit data (mode I;16*, or I holding 16-bit values): 65535 -> 255.
    return np.clip((a + 128) // 257, 0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an RGB uint8 array, flattening alpha onto white."""
    converted = _apply_icc(img)
    if converted is not None:
        img = converted
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode in ("I", "F") or mode.startswith("I;"):
        gray = _to_uint8_gray(np.asarray(img))
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    mode = img.mode
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    elif mode != "RGB":
        img = img.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV ...
    arr = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(arr)


def load_image(src: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Decode an image file or bytes into an RGB ``uint8`` array of shape (H, W, 3).

    Args:
        src: a path or the file's bytes. The format is recognised from the content: PNG, JPEG,
            WebP, BMP, TIFF, GIF (first frame) and, when Pillow supports it, AVIF.
        max_pixels: the largest accepted ``width * height``. Checked from the header before
            any pixel is decoded.

    Returns:
        ``(rgb, sha256)``: the decoded image, EXIF orientation applied, transparency flattened
        onto white, grayscale/palette/CMYK/16-bit converted to 8-bit RGB; and the SHA-256 hex
        digest of the source bytes (the cache key of later stages).

    Raises:
        ImageTooLarge: the image has more than ``max_pixels`` pixels.
        ImageError: missing, empty, truncated, corrupt or non-image data, or smaller than
            :data:`MIN_SIDE` pixels on a side.
    """
    data, name = _read_source(src)
    if not data:
        raise ImageError(f"{name} is empty")
    digest = hashlib.sha256(data).hexdigest()

    with warnings.catch_warnings():
        # We apply our own limit; Pillow's bomb *warning* is noise here (its error is handled).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=_open_formats())
        except Image.DecompressionBombError as exc:
            # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS) stops it at the header.
            found = re.search(r"\((\d+) pixels\)", str(exc))
            size = f" ({int(found.group(1)) / 1e6:.1f} megapixels)" if found else ""
            raise ImageTooLarge(
                f"{name} is larger{size} than the limit of {max_pixels} pixels "
                f"({max_pixels / 1e6:.1f} megapixels); downscale it first"
            ) from None
        except UnidentifiedImageError:
            kind = sniff_kind(data)
            hint = f" (it looks like {kind}, not an image)" if kind not in (None, "image") else ""
            raise ImageError(
                f"{name} is not a supported image (PNG, JPEG, WebP, BMP, TIFF, GIF){hint}"
            ) from None
        except Exception as exc:  # corrupt headers raise all sorts of errors in Pillow
            raise ImageError(f"{name} is corrupt or unreadable ({_short(exc)})") from None

        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise _too_large(name, width, height, max_pixels)
            if min(width, height) < MIN_SIDE:
                raise ImageError(
                    f"{name} is too small ({width}x{height}); at least {MIN_SIDE} pixels "
                    f"on each side are needed"
                )
            try:
                img.seek(0)  # first frame of animated GIF/WebP/TIFF
                img.load()
                rgb = _to_rgb(_oriented(img))
            except Image.DecompressionBombError:
                raise _too_large(name, width, height, max_pixels) from None
            except MemoryError:
                raise _too_large(name, width, height, max_pixels) from None
            except Exception as exc:
                raise ImageError(f"{name} is truncated or corrupt ({_short(exc)})") from None
    return rgb, digest


def _oriented(img: Image.Image) -> Image.Image:
    """``img`` turned upright by its EXIF orientation; unchanged when the EXIF is unusable."""
    try:
        out = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not make a good picture unreadable
        return img
    return out if out is not None else img


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:160]


def resize_max_side(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale ``img`` so its longer side is at most ``max_side`` (``INTER_AREA``).

    Never upscales; ``max_side <= 0`` keeps the image. Returns ``(image, scale)`` where
    ``scale`` is new size / old size (1.0 when unchanged; the input array is returned as is).
    """
    h, w = img.shape[:2]
    longest = max(h, w)
    if max_side is None or max_side <= 0 or longest <= max_side:
        return img, 1.0
    scale = max_side / float(longest)
    new_w = max(1, int(round(w * scale)))
    new_h = max(1, int(round(h * scale)))
    out = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return out, scale


MediaKind = Literal["image", "audio", "video"]


def sniff_kind(data: bytes) -> MediaKind | None:
    """Guess whether ``data`` (at least its first ~64 bytes) is an image, audio or video file.

    Looks only at magic bytes, never at a file name. Returns ``None`` when unknown. ISO-BMFF
    files (mp4/mov/m4a) are classified by their major brand: ``M4A``/``M4B``/``F4A`` are audio,
    ``avif``/``heic``/``mif1`` images, everything else video. Matroska/WebM is reported as
    video even when it holds audio only.
    """
    head = bytes(data[:64])
    if len(head) < 4:
        return None
    # --- images
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff"):
        return "image"
    if head[:6] in (b"GIF87a", b"GIF89a") or head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image"
    if head.startswith(b"BM") and len(head) >= 14:
        return "image"
    if head.startswith(b"RIFF") and len(head) >= 12:
        form = head[8:12]
        if form == b"WEBP":
            return "image"
        if form in (b"WAVE", b"RF64"):
            return "audio"
        if form.startswith(b"AVI"):
            return "video"
    if head.startswith(b"RF64") or head.startswith(b"BW64"):
        return "audio"
    # --- ISO base media (mp4, mov, m4a, avif, heic)
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B ", b"F4A ", b"M4P "):
            return "audio"
        if brand in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"):
            return "image"
        return "video"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "video"  # old QuickTime without ftyp
    # --- audio
    if head.startswith(b"ID3") or head.startswith(b"fLaC") or head.startswith(b"OggS"):
        return "audio"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio"
    if head.startswith(b"caff") or head.startswith(b"#!AMR") or head.startswith(b".snd"):
        return "audio"
    if head.startswith(b"MAC ") or head.startswith(b"wvpk"):
        return "audio"
    if head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        layer = (head[1] >> 1) & 0x3
        if (head[1] & 0xF6) == 0xF0:  # ADTS AAC (layer bits 00)
            return "audio"
        if layer != 0:  # MPEG audio layer I/II/III frame sync
            return "audio"
    # --- video
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska / WebM
        return "video"
    if head.startswith(b"FLV\x01"):
        return "video"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "video"  # MPEG program stream / elementary video
    if head[0] == 0x47 and len(data) > 188 and data[188] == 0x47:
        return "video"  # MPEG transport stream
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "video"  # ASF / WMV (may hold audio only)
    return None
