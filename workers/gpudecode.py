"""JPEG decoding on the GPU: nvJPEG batches through `torchvision.io.decode_jpeg(..., device="cuda")`.

On a CUDA worker, a JPEG image of a job that finds no faces never becomes pixels on the CPU: the
fetch thread reads its header only (size, colour mode, EXIF orientation, pixel cap) and the unit
keeps the compressed bytes (`EncodedJpeg`). The inference thread decodes a batch of them in one
nvJPEG call, applies the EXIF orientation, and makes the model's square with
`scanner.detector.square`, the very function the CPU path uses, so both apply the same geometry.

What differs from the CPU path is the decoder itself (nvJPEG's IDCT and chroma upsampling against
libjpeg-turbo's), a pixel level here and there; tests/unit/test_gpudecode.py holds the scores of
both within 1e-2 on a CUDA machine. Reduced-scale decoding (`Preprocessing.decode == "reduced"`)
has no nvJPEG counterpart, so such checkpoints keep decoding on the CPU: their scores stay exactly
the ones training computed.

A JPEG nvJPEG refuses (CMYK, an unusual layout, a corrupt stream) is decoded on the CPU, by the
decoder the CPU path uses, and only an image that decoder refuses too ends `error`.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from scanner.detector import Preprocessing, resize_uint8, square
from scanner.errors import PermanentError
from scanner.media import DEFAULT_MAX_PIXELS, decode_image

log = logging.getLogger(__name__)

JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
DEFAULT_END_SEARCH_BYTES = 4096  # where the end-of-image marker may sit, before trailing padding
EXIF_ORIENTATION_TAG = 0x0112
_DEVICE_MODES = {"RGB", "L"}  # JPEG colour modes nvJPEG decodes to the RGB libjpeg gives (not CMYK/YCCK)
# torchvision >= 0.29 warns that its decoders move to TorchCodec; decode_jpeg(device="cuda") is still the
# batched nvJPEG entry point this module is built on.
_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG waiting for the GPU: its bytes, EXIF orientation (1-8) and the thumbnail wanted, if any."""

    data: bytes
    orientation: int = 1
    preview_px: int | None = None  # longest side of the pixels returned for a thumbnail (None: none)


@dataclass(frozen=True)
class DeviceJpeg:
    """What the fetch thread learns from a JPEG's header: the unit's input and the image's size."""

    encoded: EncodedJpeg
    width: int
    height: int


@dataclass(frozen=True)
class Decoded:
    """One image decoded and made into the model's square on the device, with its thumbnail pixels."""

    square: torch.Tensor
    preview: np.ndarray | None = None


def decodes_on_device(device: torch.device, prep: Preprocessing, *, enabled: bool) -> bool:
    """Whether this scorer sends JPEGs to the device: CUDA, turned on, and a checkpoint that decodes in full."""
    return enabled and device.type == "cuda" and prep.decode == "full"


def device_jpeg(
    data: bytes, *, preview_px: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DeviceJpeg | None:
    """The bytes as a unit for the device decoder, or None where the CPU path must decode them.

    Reads the header only. None for anything but a complete baseline/progressive JPEG in RGB or
    greyscale within the pixel cap: the CPU path then decodes it and gives the usual reason for
    whatever is wrong with it (truncated, too large, not an image).
    """
    if not data.startswith(JPEG_START) or JPEG_END not in data[-DEFAULT_END_SEARCH_BYTES:]:
        return None  # a truncated stream: nvJPEG may paint the missing rows grey where libjpeg refuses
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format != "JPEG" or img.mode not in _DEVICE_MODES:
                    return None
                width, height = img.size
                orientation = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    if width * height > max_pixels or orientation not in range(1, 9):
        return None
    if orientation >= 5:  # a quarter turn or a transposition: width and height trade places
        width, height = height, width
    return DeviceJpeg(EncodedJpeg(data, orientation, preview_px), width, height)


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A ...xHxW image turned upright by its EXIF orientation, as `PIL.ImageOps.exif_transpose` does."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, dims=(-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(image, 1, dims=(-2, -1))
    return image


def device_square(image: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """`scanner.detector.square` for a 3xHxW uint8 image on any device.

    Torch resizes uint8 images on the CPU only; elsewhere the resize runs in float32 and is rounded
    back to uint8, which is what the CPU's uint8 resize approximates (within one pixel level).
    """
    if image.device.type == "cpu":
        return square(image, prep)
    return _to_uint8(square(image.float(), prep))


def preview_pixels(image: torch.Tensor, max_side_px: int) -> np.ndarray:
    """A 3xHxW uint8 image shrunk to fit `max_side_px` (never enlarged), as HxWx3 uint8 on the host."""
    height, width = image.shape[-2:]
    scale = max_side_px / max(height, width)
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        pixels = image[None] if image.device.type == "cpu" else image[None].float()  # as in `device_square`
        image = _to_uint8(F.interpolate(pixels, size=size, mode="bilinear", antialias=True, align_corners=False)[0])
    return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    if image.dtype == torch.uint8:
        return image
    return image.round_().clamp_(0, 255).to(torch.uint8)


def decode_batch(
    inputs: Sequence[EncodedJpeg], prep: Preprocessing, device: torch.device
) -> list[Decoded | PermanentError]:
    """Decode `inputs` on `device` in one batched call, each into the model's square on that device.

    Falls back to one call per image when the batch is refused, and to the CPU decoder for an
    image the device decoder refuses; an image neither decodes gets its PermanentError in its place.
    """
    if not inputs:
        return []
    try:
        images: list[torch.Tensor | None] = list(_decode_jpegs([i.data for i in inputs], device))
    except RuntimeError as exc:
        log.info("batched JPEG decode on %s refused (%s); decoding one by one", device, _first_line(exc))
        images = [_decode_one(i.data, device) for i in inputs]
    return [_finish(i, image, prep, device) for i, image in zip(inputs, images, strict=True)]


def _decode_jpegs(datas: list[bytes], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    # torch.frombuffer shares the bytes (read-only, never written); the copy it warns about is not needed.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
        tensors = [torch.frombuffer(data, dtype=torch.uint8) for data in datas]
        decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    return list(decoded) if isinstance(decoded, list) else [decoded]


def _decode_one(data: bytes, device: torch.device) -> torch.Tensor | None:
    try:
        return _decode_jpegs([data], device)[0]
    except RuntimeError:
        return None


def _finish(
    encoded: EncodedJpeg, image: torch.Tensor | None, prep: Preprocessing, device: torch.device
) -> Decoded | PermanentError:
    if image is None or image.ndim != 3 or image.shape[0] != 3:
        return _on_cpu(encoded, prep, device)
    upright = orient(image, encoded.orientation)
    preview = None if encoded.preview_px is None else preview_pixels(upright, encoded.preview_px)
    return Decoded(device_square(upright, prep), preview)


def _on_cpu(encoded: EncodedJpeg, prep: Preprocessing, device: torch.device) -> Decoded | PermanentError:
    """The CPU path's own decode, for an image the device decoder refused."""
    try:
        rgb = decode_image(encoded.data)
    except PermanentError as exc:
        return exc
    image = torch.from_numpy(rgb).permute(2, 0, 1)
    preview = None if encoded.preview_px is None else preview_pixels(image, encoded.preview_px)
    return Decoded(resize_uint8(rgb, prep).to(device), preview)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
