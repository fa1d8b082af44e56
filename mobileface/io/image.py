"""Reading images from disk and normalising arrays to 8-bit BGR.

Only regular files within a pixel limit are read (see :func:`read_image`): the
size an image's header declares is checked before it is decoded.
"""
from __future__ import annotations

import logging
import os
import re
import stat
import struct
from pathlib import Path

import numpy as np

from mobileface.errors import ImageError

log = logging.getLogger(__name__)


def to_bgr8(image: np.ndarray, label: str = "image") -> np.ndarray:
    """Any common image array as contiguous (H, W, 3) uint8 BGR.

    Accepts grayscale (H, W) or (H, W, 1), BGR and BGRA (alpha is dropped),
    8-bit, 16-bit and float (0..1) pixels. Anything else raises ImageError.
    """
    import cv2

    if not isinstance(image, np.ndarray):
        raise ImageError(f"{label}: expected a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ImageError(f"{label}: the image is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"{label}: unsupported image shape {image.shape}; "
                         "expected (H, W), (H, W, 3) or (H, W, 4)")
    image = _to_uint8(image, label)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray, label: str) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ImageError(f"{label}: the image has NaN or infinite pixels")
        scale = 255.0 if image.max() <= 1.0 else 1.0
        return np.clip(image * scale + 0.5, 0, 255).astype(np.uint8)
    raise ImageError(f"{label}: unsupported pixel type {image.dtype}")


#: the most pixels (width x height) an image may have: 100 megapixels, far more than a photo
#: of faces needs (a 50-megapixel camera's pictures pass), far less than what a small crafted
#: file can declare (a 1 kB PNG may say 65535x65535: 12 GB once decoded). Set the environment
#: variable MOBILEFACE_MAX_IMAGE_PIXELS to change it.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
MAX_PIXELS_ENV = "MOBILEFACE_MAX_IMAGE_PIXELS"
#: a file may hold this many bytes per allowed pixel (uncompressed 16-bit RGBA), plus
#: _HEADER_ROOM for metadata: anything larger is not an image within the limit
_BYTES_PER_PIXEL = 8
_HEADER_ROOM = 16 << 20


def max_image_pixels() -> int:
    """The pixel limit: $MOBILEFACE_MAX_IMAGE_PIXELS, else :data:`DEFAULT_MAX_IMAGE_PIXELS`.

    Read at every call, so that a test or a long-lived process can change it.
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ImageError(f"${MAX_PIXELS_ENV} must be a whole number of pixels above 0, "
                         f"got {text!r}")
    return value


def max_image_bytes(max_pixels: int | None = None) -> int:
    """The largest file :func:`read_image` reads, for a pixel limit (default: the current one)."""
    pixels = max_image_pixels() if max_pixels is None else max_pixels
    return pixels * _BYTES_PER_PIXEL + _HEADER_ROOM


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as 8-bit BGR, or raise ImageError with a one-line reason.

    Only regular files are read (a device or a FIFO would be read until memory
    runs out, or block forever), and only images within the pixel limit
    (:func:`max_image_pixels`): the size their header declares is checked
    before anything is decoded, so that a small file cannot make the decoder
    allocate gigabytes (a decompression bomb).
    """
    path = Path(path)
    return decode_image(_read_regular_file(path, max_image_bytes(max_image_pixels())), path)


def decode_image(data: bytes, path: str | os.PathLike = "image") -> np.ndarray:
    """An image file's bytes (named ``path`` in messages) as 8-bit BGR, with the checks of
    :func:`read_image`: the pixel limit before decoding, a one-line ImageError."""
    import cv2

    path = Path(path)
    max_pixels = max_image_pixels()
    if len(data) > max_image_bytes(max_pixels):
        raise ImageError(f"{path}: {len(data)} bytes, more than an image within the pixel "
                         "limit can take")
    declared = image_size(data)
    if declared is not None:
        kind, width, height = declared
        _check_pixels(path, width, height, max_pixels, f"its {kind} header declares")
    # ANYDEPTH keeps 16-bit pixels, ANYCOLOR keeps grayscale as one channel;
    # unlike IMREAD_UNCHANGED both still apply the EXIF orientation.
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:   # OpenCV's own size limit, a decoder's assertion
        reason = " ".join(str(getattr(exc, "err", "") or exc).split())
        raise ImageError(f"{path}: not a readable image (OpenCV: {reason})") from None
    except MemoryError:
        raise ImageError(f"{path}: too large to decode in the memory available") from None
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt or unsupported format)")
    # formats whose header is not parsed here: the decoded size is checked all the same
    _check_pixels(path, image.shape[1], image.shape[0], max_pixels, "it decodes to")
    if image.dtype != np.uint8 or image.ndim != 3:
        log.info("%s: converting %s %s image to 8-bit BGR", path, image.dtype, image.shape)
    return to_bgr8(image, str(path))


def _check_pixels(path: Path, width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{path}: {what} {width}x{height} pixels, more than the limit of "
                         f"{max_pixels:,} (set ${MAX_PIXELS_ENV} to raise it)")


_FILE_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path: Path, mode: int) -> ImageError:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return ImageError(f"{path}: is {kind}; images are read from regular files only")


def _read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, or ImageError.

    The type is checked with stat before opening (opening a FIFO blocks until a
    writer comes), and again on the open descriptor (opened non-blocking) in case
    the path was swapped in between.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{path}: is a directory, not an image")
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(path, info.st_mode)
    if info.st_size == 0:
        raise ImageError(f"{path}: the file is empty")
    _check_bytes(path, info.st_size, max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | \
        getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
        with open(fd, "rb", closefd=True) as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise _not_regular(path, mode)
            data = file.read(info.st_size + 1)   # +1: a file that grew meanwhile shows it
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(f"{path}: the file is empty")
    _check_bytes(path, len(data), max_bytes)
    return data


def _check_bytes(path: Path, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ImageError(f"{path}: the file has {size:,} bytes, more than the {max_bytes:,} an "
                         f"image within the pixel limit can need (set ${MAX_PIXELS_ENV} to "
                         "raise it)")


# -- the size an image's header declares ----------------------------------------------
#
# Each reader takes the file's bytes and gives (width, height), or None when the header
# is cut short or malformed: the decoder then says what is wrong with the file.


def _png_size(data: bytes):
    if data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


#: start-of-frame markers (baseline, progressive, lossless...): not DHT, JPG, DAC
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes):
    """The first start-of-frame segment's size, walking the segments as libjpeg does
    (bytes between segments are skipped, as libjpeg skips them)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if marker == 0xFF:                              # fill byte
            pos += 1
        elif marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD8:   # no length
            pos += 2
        elif marker in (0xD9, 0xDA):                    # end of image, start of scan
            return None
        elif marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


def _bmp_size(data: bytes):
    if len(data) < 26:
        return None
    if int.from_bytes(data[14:18], "little") == 12:     # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)                      # negative height: top-down rows


def _gif_size(data: bytes):
    return struct.unpack("<HH", data[6:10]) if len(data) >= 10 else None


def _webp_size(data: bytes):
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    return None


def _tiff_size(data: bytes):
    """ImageWidth and ImageLength of the first directory (classic TIFF and BigTIFF)."""
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", data[2:4])[0] == 43
    head, entry, count_fmt, offset_fmt = (16, 20, "Q", "Q") if big else (8, 12, "H", "I")
    try:
        offset = struct.unpack(order + offset_fmt, data[head - (8 if big else 4):head])[0]
        count = struct.unpack_from(order + count_fmt, data, offset)[0]
        start = offset + (8 if big else 2)
        size = {}
        for i in range(min(count, 4096)):
            tag, kind = struct.unpack_from(order + "HH", data, start + i * entry)
            if tag in (256, 257) and kind in (3, 4, 16):
                value_at = start + i * entry + (12 if big else 8)
                fmt = {3: "H", 4: "I", 16: "Q"}[kind]
                size[tag] = struct.unpack_from(order + fmt, data, value_at)[0]
    except struct.error:
        return None
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm_size(data: bytes):
    """Netpbm (P1-P6, PFM): the first two numbers after the magic, skipping comments;
    PAM (P7): its WIDTH and HEIGHT lines."""
    header = re.sub(rb"#[^\n]*", b" ", data[:4096])
    if header[:2] == b"P7":
        width = re.search(rb"\bWIDTH\s+(\d+)", header)
        height = re.search(rb"\bHEIGHT\s+(\d+)", header)
        return (int(width[1]), int(height[1])) if width and height else None
    numbers = re.match(rb"P[1-6Ff]\s+(\d+)\s+(\d+)", header)
    return (int(numbers[1]), int(numbers[2])) if numbers else None


def _sun_size(data: bytes):
    return struct.unpack(">II", data[4:12]) if len(data) >= 12 else None


def _hdr_size(data: bytes):
    """Radiance HDR: the resolution line ("-Y 480 +X 640") after the header."""
    found = re.search(rb"\n\n([-+])([XY]) (\d+) [-+]([XY]) (\d+)", data[:65536])
    if not found:
        return None
    first, second = int(found[3]), int(found[5])
    return (second, first) if found[2] == b"Y" else (first, second)


def _jp2_size(data: bytes):
    """JPEG 2000: the codestream's SIZ segment, or the JP2 file's image header box."""
    if data[:4] == b"\xff\x4f\xff\x51" and len(data) >= 24:
        width, height, x0, y0 = struct.unpack(">IIII", data[8:24])
        return width - x0, height - y0
    at = data.find(b"ihdr", 0, 65536)
    if at < 0 or len(data) < at + 12:
        return None
    height, width = struct.unpack(">II", data[at + 4:at + 12])
    return width, height


def _avif_size(data: bytes):
    """AVIF (HEIF): the first image spatial extents box."""
    at = data.find(b"ispe", 0, 65536)
    if at < 0 or len(data) < at + 16:
        return None
    return struct.unpack(">II", data[at + 8:at + 16])


#: (how a format's file starts, its name, its header reader)
_FORMATS = (
    (lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", "PNG", _png_size),
    (lambda d: d[:2] == b"\xff\xd8", "JPEG", _jpeg_size),
    (lambda d: d[:2] == b"BM", "BMP", _bmp_size),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), "GIF", _gif_size),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", "WebP", _webp_size),
    (lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "TIFF", _tiff_size),
    (lambda d: re.match(rb"P[1-7Ff]\s", d[:3]) is not None, "Netpbm", _pnm_size),
    (lambda d: d[:4] == b"\x59\xa6\x6a\x95", "Sun raster", _sun_size),
    (lambda d: d[:10] == b"#?RADIANCE" or d[:6] == b"#?RGBE", "Radiance HDR", _hdr_size),
    (lambda d: d[:4] == b"\xff\x4f\xff\x51" or d[4:12] == b"jP  \r\n\x87\n", "JPEG 2000",
     _jp2_size),
    (lambda d: d[4:8] == b"ftyp" and d[8:12] in (b"avif", b"avis"), "AVIF", _avif_size),
)


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) as the header of an image file's bytes declares them,
    without decoding; None for a format not listed in :data:`_FORMATS` or a header
    that cannot be parsed (the decoder then decides, and the decoded size is checked)."""
    for starts, name, size in _FORMATS:
        if starts(data):
            found = size(data)
            return (name, int(found[0]), int(found[1])) if found else None
    return None


#: RGB means of dlib's networks (face descriptor, Cydral's age and gender)
DLIB_MEANS_RGB = np.array([122.782, 117.001, 104.298], np.float32)


def dlib_net_blob(chips_bgr: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) BGR uint8 chips -> the (N, 3, S, S) float32 input of dlib's networks.

    RGB, (pixel - mean) / 256 with :data:`DLIB_MEANS_RGB`, as dlib's
    ``input_rgb_image`` layers compute it.
    """
    rgb = chips_bgr[..., ::-1].astype(np.float32)
    return np.ascontiguousarray(((rgb - DLIB_MEANS_RGB) / 256.0).transpose(0, 3, 1, 2))
