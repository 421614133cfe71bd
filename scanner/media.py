"""What a piece of media is, judged from its bytes, and image decoding shared by workers and training.

Both the workers and the training/evaluation code decode images here, so the pixels a model is
evaluated on are the pixels it scores in production.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from scanner.errors import PermanentError

DEFAULT_MAX_PIXELS = 64_000_000  # ~8000 x 8000; larger images are refused as decompression bombs
DEFAULT_COPY_BAND_BYTES = 8 << 20  # decoded pixels are handed to numpy in bands of about this size
DEFAULT_IMAGE_BLOCK_BYTES = 64 << 20  # Pillow's allocation block for workers: above glibc's 32 MB mmap threshold

MediaKind = Literal["image", "video", "unknown"]

_IMAGE_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\xff\xd8\xff"),  # JPEG
    (0, b"\x89PNG\r\n\x1a\n"),
    (0, b"GIF87a"),
    (0, b"GIF89a"),
    (0, b"BM"),
    (0, b"II*\x00"),  # TIFF, little-endian
    (0, b"MM\x00*"),  # TIFF, big-endian
)
_VIDEO_BRANDS_AT_4 = (b"ftyp",)  # MP4 / MOV / 3GP family: size, then 'ftyp'
_QUICKTIME_ATOMS_AT_4 = (b"moov", b"mdat", b"wide", b"free", b"pnot")  # older QuickTime files start without 'ftyp'
_VIDEO_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x00\x00\x01\xb3"),  # MPEG-1/2 video
)


# An ISO BMFF handler box: size, "hdlr", version+flags, pre_defined, then the handler type.
_ISO_HANDLER = re.compile(rb"hdlr.{8}(vide|soun)", re.DOTALL)
_MATROSKA_MAGIC = b"\x1a\x45\xdf\xa3"
_MATROSKA_TRACK_TYPE = re.compile(rb"\x83\x81([\x01\x02])")  # TrackType, one byte long: 1 video, 2 audio
_MATROSKA_VIDEO, _MATROSKA_AUDIO = b"\x01", b"\x02"


def sniff_kind(head: bytes) -> MediaKind:
    """Classify media from its first bytes (at least 16), never from its name or Content-Type."""
    if any(head[offset:].startswith(sig) for offset, sig in _IMAGE_SIGNATURES):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[4:8] in _VIDEO_BRANDS_AT_4:
        brand = head[8:12]
        # HEIF/AVIF stills share the ISO container with MP4.
        return "image" if brand in {b"avif", b"avis", b"heic", b"heix", b"mif1"} else "video"
    if head[4:8] in _QUICKTIME_ATOMS_AT_4:
        return "video"
    if any(head[offset:].startswith(sig) for offset, sig in _VIDEO_SIGNATURES):
        return "video"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:  # MPEG transport stream
        return "video"
    return "unknown"


def audio_only(head: bytes, tail: bytes = b"") -> bool:
    """True when a video container's own track list declares sound and no picture.

    An .m4a, a podcast .mp4 or an audio-only .webm sniffs as video but has no frames to sample; its
    item should say so rather than blame the decoder. `head` and `tail` are the file's first and last
    bytes (an MP4's track list, `moov`, sits at either end; Matroska's near the start).
    """
    if head[4:8] in _VIDEO_BRANDS_AT_4 or head[4:8] in _QUICKTIME_ATOMS_AT_4:
        handlers = set(_ISO_HANDLER.findall(head + tail))
        return b"soun" in handlers and b"vide" not in handlers
    if head.startswith(_MATROSKA_MAGIC):
        track_types = set(_MATROSKA_TRACK_TYPE.findall(head))
        return _MATROSKA_AUDIO in track_types and _MATROSKA_VIDEO not in track_types
    return False


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side_px: int | None = None) -> np.ndarray:
    """Decode image bytes to an HxWx3 uint8 RGB array, EXIF orientation applied.

    Animated formats (GIF, WebP) give their first frame. Raises PermanentError with a one-line
    reason for empty, truncated, unknown or oversized images. Memory: Pillow's decoded image (4 bytes
    a pixel) plus the returned array (3 bytes a pixel), about 450 MB at the 64-megapixel cap.
    With `min_side_px`, a JPEG is decoded at the smallest of 1/2, 1/4, 1/8 scale that keeps both
    sides >= min_side_px (libjpeg's scaled IDCT: several times faster, a fraction of the memory);
    other formats, and JPEGs too small for that, decode in full. The caller decides (for a model's
    input, the checkpoint does: `Preprocessing.decode_min_side_px`), since it changes pixels.
    """
    if not data:
        raise PermanentError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise PermanentError(f"image is {width}x{height}, over the {max_pixels:,}-pixel limit")
                img.seek(0)
                if min_side_px is not None and img.format == "JPEG":
                    img.draft(None, (min_side_px, min_side_px))
                img.load()
                ImageOps.exif_transpose(img, in_place=True)
                return _rgb_array(img)
    except PermanentError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PermanentError(f"image over the {max_pixels:,}-pixel limit (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise PermanentError("not an image or video") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PermanentError(f"corrupt image: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def release_decoded_memory_promptly() -> None:
    """Have Pillow allocate large images in blocks the C library maps on their own, so their memory
    goes back to the system when they are freed.

    Pillow's default 16 MB blocks are under glibc's largest mmap threshold (32 MB): once a few have
    been freed they come from the allocating thread's heap, and a thread that once decoded a
    62-megapixel image keeps its ~250 MB after it is freed. With 8+ fetch threads that held a
    worker at 3.6 GB where its live pixels needed under 2 (bench/memory.py, docs/performance.md).
    """
    Image.core.set_block_size(DEFAULT_IMAGE_BLOCK_BYTES)  # type: ignore[attr-defined]  # documented, untyped


def decoded_pixels(data: bytes, *, min_side_px: int | None = None) -> int:
    """How many pixels `decode_image(data, min_side_px=...)` would decode, read from the header alone.

    0 when the header cannot be read (decoding it then fails at once, holding nothing).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if min_side_px is not None and img.format == "JPEG":
                    img.draft(None, (min_side_px, min_side_px))  # the scale decode_image decodes at
                width, height = img.size
                return int(width) * int(height)
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 0


def _rgb_array(img: Image.Image) -> np.ndarray:
    """The decoded image as an HxWx3 uint8 RGB array, converted and copied one band of rows at a time.

    `np.asarray(img.convert("RGB"))` would hold a converted copy and a bytes copy next to the decoded
    image (about 4.5x the array's size at the peak); band by band, the extra is one band.
    """
    width, height = img.size
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, DEFAULT_COPY_BAND_BYTES // (3 * width))
    for top in range(0, height, rows):
        band = img.crop((0, top, width, min(height, top + rows)))
        out[top : top + band.height] = np.asarray(band if band.mode == "RGB" else band.convert("RGB"))
    return out


def read_image_file(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, min_side_px: int | None = None) -> np.ndarray:
    """Decode an image file from disk (see `decode_image`)."""
    with open(path, "rb") as fh:
        return decode_image(fh.read(), max_pixels=max_pixels, min_side_px=min_side_px)
