"""Real encoded media for tests: images in every supported format, MP4 videos, and the bad inputs.

Everything is generated on the fly from a seed (no downloads, no binary fixtures in the repository)
and written with the same encoders users' files come from (Pillow, OpenCV's FFmpeg), so a test
that decodes these files exercises the real decoders.

Videos carry their frame number as a row of black/white squares along the top edge (bit i of the
frame index in square i); `read_frame_number` reads it back, so a test can check exactly which
frames a sampler picked. A pure red square sits in the bottom-left corner (`red_corner`), so a
test can tell RGB from BGR.
"""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_FORMATS = ("jpeg", "png", "webp", "bmp", "tiff", "gif")
_PIL_FORMATS = {
    "jpeg": "JPEG",
    "jpg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
    "tif": "TIFF",
    "gif": "GIF",
}

DEFAULT_IMAGE_SIZE = (96, 72)  # (width, height) in pixels
DEFAULT_FACE_SIZE = (256, 256)
_FRAME_CODE_BITS = 12  # frame numbers up to 4095
_EXIF_ORIENTATION_TAG = 0x0112


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def pattern_rgb(size: tuple[int, int] = DEFAULT_IMAGE_SIZE, *, seed: int = 0) -> np.ndarray:
    """A smooth, seed-dependent picture (gradients and blobs): compresses like a photo, not like noise."""
    width, height = size
    rng = _rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for channel in range(3):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        img[..., channel] = 127 + 100 * np.sin(2 * np.pi * (fx * xx / width + fy * yy / height) + phase)
    for _ in range(3):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(5, max(6, min(size) / 3))
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def face_rgb(size: tuple[int, int] = DEFAULT_FACE_SIZE, *, seed: int = 0) -> np.ndarray:
    """A drawn frontal face (skin oval, hair, brows, eyes, nose, mouth) that OpenCV's Haar cascade detects.

    Verified by tests/unit/test_faces.py for square sizes from 128 to 640 pixels. The face fills about
    60% of the shorter side, centred; `seed` varies the background and the noise.
    """
    width, height = size
    rng = _rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = rng.integers(60, 170, 3, dtype=np.uint8)
    side = min(width, height)
    cx, cy = width // 2, height // 2
    fw, fh = int(side * 0.30), int(side * 0.40)
    cv2.ellipse(img, (cx, cy - int(fh * 0.25)), (int(fw * 1.08), int(fh * 0.9)), 0, 180, 360, (40, 30, 25), -1)
    cv2.ellipse(img, (cx, cy), (fw, fh), 0, 0, 360, (200, 160, 140), -1)
    eye_y, eye_dx = cy - int(fh * 0.18), int(fw * 0.42)
    for sign in (-1, 1):
        ex = cx + sign * eye_dx
        cv2.ellipse(img, (ex, eye_y - int(fh * 0.17)), (int(fw * 0.26), int(fh * 0.04)), 0, 180, 360, (60, 40, 30), -1)
        cv2.ellipse(img, (ex, eye_y), (int(fw * 0.22), int(fh * 0.07)), 0, 0, 360, (240, 240, 240), -1)
        cv2.circle(img, (ex, eye_y), int(fh * 0.06), (50, 35, 30), -1)
    cv2.line(img, (cx, eye_y + int(fh * 0.05)), (cx, eye_y + int(fh * 0.35)), (170, 130, 110), max(2, side // 60))
    cv2.ellipse(img, (cx, eye_y + int(fh * 0.38)), (int(fw * 0.15), int(fh * 0.04)), 0, 0, 360, (150, 110, 95), -1)
    cv2.ellipse(img, (cx, cy + int(fh * 0.45)), (int(fw * 0.35), int(fh * 0.08)), 0, 0, 360, (150, 60, 60), -1)
    blurred = cv2.GaussianBlur(img, (0, 0), max(side / 200, 0.5))
    noisy: np.ndarray = np.clip(blurred + rng.normal(0, 4, blurred.shape), 0, 255).astype(np.uint8)
    return noisy


def encode_image(rgb: np.ndarray, fmt: str) -> bytes:
    """Encode an RGB array with Pillow in `fmt` (jpeg, png, webp, bmp, tiff or gif)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=_PIL_FORMATS[fmt.lower()])
    return buf.getvalue()


def _format_for(path: Path, fmt: str | None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in _PIL_FORMATS:
        raise ValueError(f"unknown image format {fmt!r}: use one of {', '.join(IMAGE_FORMATS)}")
    return fmt


def write_image(
    path: Path, fmt: str | None = None, size: tuple[int, int] = DEFAULT_IMAGE_SIZE, *, seed: int = 0, face: bool = False
) -> Path:
    """Write a real image file; `fmt` defaults to the file's suffix. `face=True` draws `face_rgb`."""
    rgb = face_rgb(size, seed=seed) if face else pattern_rgb(size, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_image(rgb, _format_for(path, fmt)))
    return path


def face_photo(path: Path, size: tuple[int, int] = DEFAULT_FACE_SIZE, *, seed: int = 0) -> Path:
    """Write a JPEG (or the suffix's format) of a drawn face that the Haar cascade finds."""
    return write_image(path, size=size, seed=seed, face=True)


def write_exif_rotated_jpeg(path: Path, size: tuple[int, int] = (80, 40), *, orientation: int = 6) -> Path:
    """A JPEG stored `size` (w, h) with an EXIF orientation tag (6 = display rotated 90° clockwise).

    The stored pixels are red in the left half and blue in the right; after orientation 6 is applied
    the displayed image is h x w with red on top and blue at the bottom.
    """
    width, height = size
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = (255, 0, 0)
    rgb[:, width // 2 :] = (0, 0, 255)
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION_TAG] = orientation
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def _stamp_frame_number(bgr: np.ndarray, index: int) -> None:
    """Write `index` as black/white squares along the top, and a pure red square bottom-left (colour order)."""
    height, width = bgr.shape[:2]
    cell = width // _FRAME_CODE_BITS
    for bit in range(_FRAME_CODE_BITS):
        bgr[0:cell, bit * cell : (bit + 1) * cell] = 255 if (index >> bit) & 1 else 0
    bgr[height - 2 * cell :, : 2 * cell] = (0, 0, 255)  # BGR order: red


def red_corner(rgb: np.ndarray) -> np.ndarray:
    """The mean colour of the red square `write_video` paints bottom-left (pure red if read as RGB)."""
    height, width = rgb.shape[:2]
    cell = width // _FRAME_CODE_BITS
    mean: np.ndarray = rgb[height - 2 * cell + 2 : height - 2, 2 : 2 * cell - 2].reshape(-1, 3).mean(axis=0)
    return mean


def read_frame_number(rgb: np.ndarray) -> int:
    """The frame index `write_video` stamped into a frame (robust to lossy compression)."""
    width = rgb.shape[1]
    cell = width // _FRAME_CODE_BITS
    centre = cell // 2
    bits = [int(rgb[centre, bit * cell + centre].mean() > 127) for bit in range(_FRAME_CODE_BITS)]
    return sum(value << bit for bit, value in enumerate(bits))


def write_video(
    path: Path,
    seconds: float = 2.0,
    fps: float = 10.0,
    size: tuple[int, int] = (192, 144),
    *,
    seed: int = 0,
    face: bool = False,
) -> Path:
    """Write an MP4 ('mp4v') of `seconds * fps` frames, each stamped with its frame number, whatever `path`'s suffix.

    The picture drifts from frame to frame; `face=True` puts `face_rgb` under the stamp. Raises
    RuntimeError if OpenCV cannot encode or read back the file.
    """
    width, height = size
    if width < _FRAME_CODE_BITS * 8:
        raise ValueError(f"video width must be at least {_FRAME_CODE_BITS * 8} pixels to carry the frame stamp")
    frames = round(seconds * fps)
    base = face_rgb(size, seed=seed) if face else pattern_rgb(size, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".writing.mp4")  # OpenCV picks the container from the suffix
    writer = cv2.VideoWriter(str(staging), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MP4 to {staging}")
    try:
        for index in range(frames):
            bgr = np.ascontiguousarray(np.roll(base, index, axis=1)[..., ::-1]) if not face else base[..., ::-1].copy()
            _stamp_frame_number(bgr, index)
            writer.write(bgr)
    finally:
        writer.release()
    _check_video_decodes(staging, frames)
    staging.replace(path)
    return path


def _check_video_decodes(path: Path, frames: int) -> None:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        ok, _ = cap.read()
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if not ok or count != frames:
        raise RuntimeError(f"{path} does not decode back ({count} of {frames} frames)")


# --- bad inputs -------------------------------------------------------------------------------


def write_zero_byte(path: Path) -> Path:
    """An empty file (named .jpg by the callers that want the worst case)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_truncated_jpeg(path: Path, *, keep_fraction: float = 0.5) -> Path:
    """A real JPEG cut off part way: it sniffs as an image but cannot be decoded."""
    data = encode_image(pattern_rgb((160, 120), seed=7), "jpeg")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


def write_text_as_jpeg(path: Path) -> Path:
    """A plain text file with an image name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a picture, just some notes\n" * 4)
    return path


HTML_BYTES = b"<!DOCTYPE html>\n<html><head><title>Not found</title></head><body><h1>Oops</h1></body></html>\n"


def write_html(path: Path) -> Path:
    """An HTML page (what a CDN error page or a login wall returns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(HTML_BYTES)
    return path


def _ebml(element_id: int, payload: bytes) -> bytes:
    """One Matroska (EBML) element, its size in the shortest form muxers write."""
    size = (
        (0x80 | len(payload)).to_bytes(1, "big") if len(payload) < 0x7F else (1 << 56 | len(payload)).to_bytes(8, "big")
    )
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + size + payload


def _ebml_uint(element_id: int, value: int) -> bytes:
    return _ebml(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def write_audio_only_mkv(path: Path, *, seconds: int = 1, rate: int = 8000) -> Path:
    """A Matroska file with one 16-bit PCM sound track and no picture (an audio-only .mkv/.webm)."""
    header = _ebml(0x1A45DFA3, _ebml(0x4282, b"matroska") + _ebml_uint(0x4287, 4) + _ebml_uint(0x4285, 2))
    info = _ebml(0x1549A966, _ebml_uint(0x2AD7B1, 1_000_000) + _ebml(0x4489, struct.pack(">d", seconds * 1000.0)))
    audio = _ebml(0xE1, _ebml(0xB5, struct.pack(">d", float(rate))) + _ebml_uint(0x9F, 1) + _ebml_uint(0x6264, 16))
    codec = _ebml(0x86, b"A_PCM/INT/LIT")
    track = _ebml(0xAE, _ebml_uint(0xD7, 1) + _ebml_uint(0x73C5, 1) + _ebml_uint(0x83, 2) + codec + audio)
    tone = struct.pack(f"<{rate // 10}h", *(((n % 64) - 32) * 500 for n in range(rate // 10)))
    blocks = b"".join(_ebml(0xA3, b"\x81" + struct.pack(">h", i * 100) + b"\x80" + tone) for i in range(seconds * 10))
    cluster = _ebml(0x1F43B675, _ebml_uint(0xE7, 0) + blocks)
    path.write_bytes(header + _ebml(0x18538067, info + _ebml(0x1654AE6B, track) + cluster))
    return path


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def write_audio_only_mp4(path: Path) -> Path:
    """An MP4 (.m4a) whose only track is sound: its handler box says `soun`, and no `vide` anywhere."""
    handler = _box(b"hdlr", bytes(4) + bytes(4) + b"soun" + bytes(12) + b"SoundHandler\x00")
    moov = _box(b"moov", _box(b"trak", _box(b"mdia", handler)))
    path.write_bytes(_box(b"ftyp", b"M4A " + bytes(4) + b"M4A isom") + moov + _box(b"mdat", bytes(4096)))
    return path


def write_garbage_mp4(path: Path, *, garbage_bytes: int = 8192) -> Path:
    """A real MP4 header ('ftyp' box) followed by random bytes: sniffs as video, no frame decodes."""
    header = b"\x00\x00\x00\x1cftypisom\x00\x00\x02\x00isomiso2mp41"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + _rng(3).bytes(garbage_bytes))
    return path


def write_corrupt_frames_mp4(path: Path) -> Path:
    """A valid MP4 container (index intact, opens fine) whose frame data is random: no frame decodes."""
    write_video(path, seconds=1.0, fps=10.0)
    data = bytearray(path.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
    data[start:end] = _rng(4).bytes(end - start)
    path.write_bytes(bytes(data))
    return path


@dataclass(frozen=True)
class BadInput:
    """A bad file and the one-line reason its scan must end with (a substring of it)."""

    path: Path
    reason: str


def write_bad_inputs(folder: Path) -> list[BadInput]:
    """Every bad input of issue 4, each with the reason fetching or decoding it must give."""
    return [
        BadInput(write_zero_byte(folder / "empty.jpg"), "empty file (0 bytes)"),
        BadInput(write_truncated_jpeg(folder / "truncated.jpg"), "corrupt image"),
        BadInput(write_text_as_jpeg(folder / "notes.jpg"), "not an image or video"),
        BadInput(write_html(folder / "page.jpg"), "not an image or video"),
        BadInput(write_garbage_mp4(folder / "garbage.mp4"), "video has no decodable frames"),
    ]


def write_mixed_folder(folder: Path, *, images: int = 21, videos: int = 2, seed: int = 0) -> list[Path]:
    """Good media for an end-to-end scan: JPEG/PNG/WebP images (one in three a face) and MP4 videos.

    Returns the written paths, sorted. Add `write_bad_inputs(folder)` for the bad ones.
    """
    written = []
    for index in range(images):
        fmt = ("jpg", "png", "webp")[index % 3]
        size = (128, 128) if index % 3 == 0 else DEFAULT_IMAGE_SIZE
        written.append(
            write_image(folder / f"img_{index:03d}.{fmt}", size=size, seed=seed + index, face=index % 3 == 0)
        )
    for index in range(videos):
        written.append(write_video(folder / f"clip_{index}.mp4", seconds=3.0, fps=10.0, seed=seed + index))
    return sorted(written)


# --- hostile inputs: small files that are huge or slow once decoded ------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_BLOCK_BYTES = 1 << 20  # about this much image data per independently compressed deflate block


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _deflate_block(data: bytes) -> bytes:
    """`data` as self-contained, non-final raw deflate blocks (no reference to earlier data)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush(zlib.Z_FULL_FLUSH)


def _repeated_rows_zlib(row: bytes, count: int) -> bytes:
    """A zlib stream of `row` repeated `count` times, compressing one block of rows and repeating it.

    Identical blocks compress to identical bytes when each starts from an empty window, so a
    192 MB image costs one small compression and one checksum pass (about 0.1 s, not 1.3 s).
    """
    rows_per_block = max(1, _PNG_BLOCK_BYTES // len(row))
    full, rest = divmod(count, rows_per_block)
    block = row * rows_per_block
    body = _deflate_block(block) * full + (_deflate_block(row * rest) if rest else b"")
    checksum = 1
    for _ in range(full):
        checksum = zlib.adler32(block, checksum)
    checksum = zlib.adler32(row * rest, checksum)
    final_empty_block = b"\x03\x00"
    return b"\x78\xda" + body + final_empty_block + struct.pack(">I", checksum)


def write_flat_png(path: Path, size: tuple[int, int], *, colour: tuple[int, int, int] = (90, 120, 150)) -> Path:
    """A PNG of `size` (w, h) in one flat colour: a few hundred KiB on disk, w x h x 3 bytes decoded.

    The decompression-bomb shape (a 7999x7999 one is about 200 KiB and decodes to 192 MB), made without
    ever holding the image in memory, so the test process stays small whatever the size.
    """
    width, height = size
    row = b"\x00" + bytes(colour) * width  # filter type 0 (none), then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    idat = _repeated_rows_zlib(row, height)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )
    return path


def _write_packets(path: Path, fourcc: str, size: tuple[int, int], fps: float, packets: Iterable[np.ndarray]) -> None:
    """Mux already-encoded packets into an AVI with OpenCV's raw mode; only the first is marked a keyframe."""
    params = [cv2.VIDEOWRITER_PROP_RAW_VIDEO, 1, cv2.VIDEOWRITER_PROP_KEY_INTERVAL, 2**31 - 1]
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*fourcc), fps, size, params)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot mux raw {fourcc} packets into {path}")
    try:
        for packet in packets:
            writer.write(packet.reshape(1, -1))
    finally:
        writer.release()


def write_mjpeg_avi(path: Path, size: tuple[int, int], *, frames: int = 8, fps: float = 25.0) -> Path:
    """A Motion-JPEG AVI of `frames` identical `size` (w, h) frames: a flat picture with a red square.

    One JPEG is encoded and muxed `frames` times, so a 9000x9000 video (about 1.3 MB a frame on disk,
    243 MB a frame decoded) takes well under a second to make. Every MJPEG frame is a keyframe.
    """
    width, height = size
    bgr = np.full((height, width, 3), 90, np.uint8)
    bgr[height // 4 : height // 2, width // 4 : width // 2] = (0, 0, 255)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 50])
    del bgr
    if not ok:
        raise RuntimeError("OpenCV cannot encode JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_packets(path, "MJPG", size, fps, (jpeg for _ in range(frames)))
    return path


def write_long_gop_video(
    path: Path, *, frames: int = 20_000, fps: float = 30.0, size: tuple[int, int] = (96, 72), seed: int = 0
) -> Path:
    """An MPEG-4 AVI of `frames` frames with ONE keyframe: seeking anywhere decodes from the very first frame.

    OpenCV's writer puts a keyframe every 12 frames and has no option to change that, so one keyframe
    and then predicted frames are taken from a short encode of a still picture and muxed again: the
    keyframe, then its (all-skip, 11-byte) predicted frames repeated `frames - 1` times. The container
    index, the packet flags and the bitstream all agree there is a single keyframe, as in a screen
    recording or a hostile encode with an endless GOP. Every frame decodes to the same picture;
    20,000 frames take about 0.1 s to write and 0.7 MB on disk.
    """
    width, height = size
    still = pattern_rgb(size, seed=seed)[..., ::-1].copy()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".gop.avi")
    writer = cv2.VideoWriter(str(staging), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    for _ in range(12):
        writer.write(still)
    writer.release()
    reader = cv2.VideoCapture(str(staging), cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
    packets = []
    while True:
        ok, packet = reader.read()
        if not ok:
            break
        packets.append(packet.copy())
    reader.release()
    staging.unlink()
    if len(packets) != 12:
        raise RuntimeError(f"OpenCV's mp4v encode of 12 frames gave {len(packets)} packets")
    keyframe, predicted = packets[0], packets[1:]
    _write_packets(path, "mp4v", size, fps, itertools.chain([keyframe], (predicted[i % 11] for i in range(frames - 1))))
    return path
