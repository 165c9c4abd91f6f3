"""Decoding images (any backend): one file to 8-bit RGB (`to_rgb`, `load_image`,
`check_image`), and a whole set once into one uint8 array (`decode_images`), in memory
or memory-mapped on disk.

A photo decoded and resized to 224 x 224 RGB is 147 KB as uint8, four times that as
float32; the array keeps the uint8 pixels and batches cast to float32 one batch at a
time (`templates.data.batches`). Up to ``memory_limit_gb`` the array lives in memory;
a larger set is decoded into a memory-mapped ``.npy`` file (``cache_file``) that the
operating system pages in as batches read it, so memory stays bounded whatever the
number of photos. That file is written in chunks beside a small JSON manifest of the
files it holds and how many are decoded, so a run killed while decoding and started
again continues where it stopped instead of decoding every photo again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, UnidentifiedImageError

from templates.data.files import fingerprint as files_fingerprint

#: Decoded images held in memory before they go to a memory-mapped file: 4 GB leaves a
#: 16 GB machine room for the model, its features and the operating system.
DEFAULT_CACHE_MEMORY_GB = 4.0
#: Images decoded between two writes of the manifest (what a killed run keeps).
CHUNK = 256


#: Allocations at least this large are mapped from the system and returned on free: a
#: float32 batch of 32 photos at 224 px (19 MB) is, the backbone's activations (MobileNet
#: 0.25: 13 MB and less, but one of 26 MB) mostly are not.
MMAP_THRESHOLD_BYTES = 16 << 20


def return_large_blocks_to_the_system() -> bool:
    """Have glibc's allocator map every allocation of 16 MB or more and give it back when
    it is freed (``mallopt(M_MMAP_THRESHOLD, 16 MB)``); returns whether it could.

    By default glibc raises that threshold each time a large block is freed, up to
    32 MB, after which the batches of a training run (a float32 batch of 32 photos at
    224 px is 19 MB, made and dropped every step) come from the heap and fragment it:
    measured on the cats recipe (benchmarks.data_scaling), 390 MB more memory held at
    1,000 photos. A lower threshold (1 MB, tried first) also maps the backbone's
    activations, and the page faults of mapping them afresh every step made the recipe
    slower at 2,000 photos (72 s against 58 s without the call, 62 s at 16 MB: one run
    each in one sitting; docs/benchmarks.md has the benchmark). The recipes call this first (`templates.cli.run_main`);
    a program of your own can too. A no-op where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        library = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = library.mallopt
    except (OSError, AttributeError):
        return False
    M_MMAP_THRESHOLD = -3
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def decoded_bytes(count: int, image_size: tuple[int, int]) -> int:
    """Bytes of ``count`` decoded uint8 RGB images of ``image_size`` (height, width)."""
    height, width = image_size
    return int(count) * int(height) * int(width) * 3


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow image (grayscale, palette, RGBA, CMYK, 16-bit...) to 8-bit RGB.

    Transparent pixels are composited onto white; 16- and 32-bit images are scaled
    down to 8 bits rather than clipped.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        top = 1.0 if array.max() <= 1.0 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def load_image(path: str | os.PathLike, image_size: tuple[int, int]) -> np.ndarray:
    """Read one image as a ``(height, width, 3)`` uint8 RGB array, resized bilinearly."""
    height, width = image_size
    with Image.open(path) as image:
        image.seek(0)  # first frame of animated GIF/WebP
        rgb = to_rgb(image)
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def check_image(path: str) -> str | None:
    """Return ``None`` if ``path`` decodes completely as an image, else the reason."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        with Image.open(path) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                return f"image has no pixels ({image.width}x{image.height})"
            to_rgb(image)
    except UnidentifiedImageError:
        return "not an image Pillow can read (unknown format or not an image at all)"
    except Image.DecompressionBombError as error:
        return f"too large to decode safely ({error})"
    except (OSError, ValueError, SyntaxError) as error:
        return f"cannot decode: {error}"
    return None


def _decode_into(array: np.ndarray, files: Sequence[str], image_size: tuple[int, int],
                 start: int, stop: int, decode: Callable, workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for index, image in zip(range(start, stop),
                                pool.map(lambda path: decode(path, image_size),
                                         files[start:stop])):
            array[index] = image


def decode_images(
    files: Sequence[str],
    image_size: int | tuple[int, int],
    cache_file: str | os.PathLike | None = None,
    memory_limit_gb: float | None = DEFAULT_CACHE_MEMORY_GB,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Decode and resize ``files`` once into a ``(count, height, width, 3)`` uint8 array.

    Args:
        files: Image paths (decoded with `load_image`).
        image_size: Side, or ``(height, width)``.
        cache_file: Where a set larger than ``memory_limit_gb`` is memory-mapped
            (``.npy``); a file from an earlier run with the same files and size is
            reused, and continued when that run stopped while decoding. ``None``: a
            temporary file, deleted when the program ends.
        memory_limit_gb: The most decoded images kept in memory; ``None``: no limit.
            ``0`` always maps a file.
        progress: Called with ``(decoded, total)`` after each chunk.
        workers: Decoding threads (Pillow releases the GIL); default 2 per core, at
            most 8.

    Returns:
        A NumPy array, or a read-only `numpy.memmap` of the cache file.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    image_size = (int(image_size[0]), int(image_size[1]))
    files = [os.fspath(path) for path in files]
    shape = (len(files), *image_size, 3)
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    in_memory = memory_limit_gb is None or \
        decoded_bytes(len(files), image_size) <= memory_limit_gb * 1e9
    if in_memory:
        array = np.empty(shape, np.uint8)
        for start in range(0, len(files), CHUNK):
            stop = min(start + CHUNK, len(files))
            _decode_into(array, files, image_size, start, stop, load_image, workers)
            if progress:
                progress(stop, len(files))
        return array

    if cache_file is None:
        handle, cache_file = tempfile.mkstemp(suffix=".npy", prefix="decoded-images-")
        os.close(handle)
        os.remove(cache_file)
        import atexit

        atexit.register(lambda path=cache_file: os.path.exists(path) and os.remove(path))
        atexit.register(lambda path=cache_file + ".json":
                        os.path.exists(path) and os.remove(path))
    cache_file = os.fspath(cache_file)
    manifest_file = cache_file + ".json"
    fingerprint = files_fingerprint(list(image_size), [os.fspath(path) for path in files])
    decoded = 0
    if os.path.isfile(cache_file) and os.path.isfile(manifest_file):
        try:
            with open(manifest_file, encoding="utf-8") as handle:
                manifest = json.load(handle)
        except (OSError, ValueError):
            manifest = {}
        if manifest.get("fingerprint") == fingerprint and manifest.get("shape") == list(shape):
            decoded = int(manifest.get("decoded", 0))
    if decoded == len(files):
        return np.load(cache_file, mmap_mode="r")
    os.makedirs(os.path.dirname(os.path.abspath(cache_file)), exist_ok=True)
    if decoded:
        array = np.load(cache_file, mmap_mode="r+")
    else:
        array = np.lib.format.open_memmap(cache_file, mode="w+", dtype=np.uint8, shape=shape)
    for start in range(decoded, len(files), CHUNK):
        stop = min(start + CHUNK, len(files))
        _decode_into(array, files, image_size, start, stop, load_image, workers)
        array.flush()
        with open(manifest_file + ".tmp", "w", encoding="utf-8") as handle:
            json.dump({"fingerprint": fingerprint, "shape": list(shape), "decoded": stop},
                      handle)
        os.replace(manifest_file + ".tmp", manifest_file)
        if progress:
            progress(stop, len(files))
    del array
    return np.load(cache_file, mmap_mode="r")
