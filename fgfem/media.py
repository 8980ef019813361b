"""Still-image input and output for every subcommand (PIL + numpy).

Everything downstream (face detection, the generator, paste-back) wants one
thing: an upright ``H x W x 3`` uint8 RGB array. Photos in the wild are not
that: they are greyscale, palette, 16-bit, CMYK, carry an alpha channel or an
EXIF rotation, are animated, truncated, huge, or not images at all.
``load_image`` turns all of these into the array plus what is needed to write
the result back faithfully (format, EXIF, ICC profile, alpha), and turns every
failure a user can cause into a one-line ``FgfemError``.

Choices made here, so that callers do not have to:

- EXIF orientation is applied on load, so pixels are upright. ``save_image``
  therefore writes the EXIF orientation tag as 1 (normal): the file looks the
  same in every viewer, including those that ignore EXIF.
- Multi-frame files (animated GIF/APNG/WebP, multi-page TIFF) load their first
  frame with a ``MediaWarning``: an edit of the first frame is more useful than
  a refusal, and the warning says what happened.
- Alpha is kept apart from colour: ``rgb`` holds the straight (not
  premultiplied, not composited) colour, ``alpha`` the coverage; ``save_image``
  re-attaches it when the output format can hold it.
- A pixel limit (default 100 MP, ``FGFEM_MAX_PIXELS`` or ``max_pixels=``)
  refuses decompression bombs with a clear message instead of PIL's warning.
- Truncated files are errors: PIL's ``LOAD_TRUNCATED_IMAGES`` is never set,
  because a silently grey-filled half photo is worse than a refusal.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from fgfem.atomic import atomic_path
from fgfem.errors import FgfemError

IMAGE_SUFFIXES: set[str] = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga",
}
VIDEO_SUFFIXES: set[str] = {
    ".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp",
    ".ts", ".mts", ".m2ts", ".ogv",
}

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image (width x height) ``load_image`` accepts unless told otherwise."""

_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF", "TGA"}
_EXIF_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF"}
_ICC_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF"}
_ORIENTATION_TAG = 0x0112
_EXIF_IFD = 0x8769
_PIXEL_X_DIMENSION, _PIXEL_Y_DIMENSION = 0xA002, 0xA003


class MediaWarning(UserWarning):
    """Something about an input was handled in a way the user may want to know about."""


PathLike = str | bytes | os.PathLike


def as_path(path: PathLike) -> Path:
    """A ``Path`` from str, bytes (any encoding: undecodable bytes become surrogate escapes) or PathLike."""
    if isinstance(path, Path):
        return path
    return Path(os.fsdecode(path))


def describe_path(path: PathLike) -> str:
    """A printable form of ``path`` for messages.

    File names that are not valid UTF-8 survive in Python as lone surrogates, and
    printing those raises ``UnicodeEncodeError``; here they become ``\\xNN``.
    """
    text = os.fsdecode(path) if not isinstance(path, str) else path
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_image(path: PathLike) -> bool:
    """True if the name looks like an image fgfem reads (by suffix, case-insensitive)."""
    return as_path(path).suffix.lower() in IMAGE_SUFFIXES


# Formats recognised by content when the suffix says otherwise (a JPEG saved as ``.heic``): only those
# whose files start with a magic number, so that no other file is ever mistaken for an image.
_SNIFFED_FORMATS: dict[str, str] = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp",
                                    "TIFF": ".tif", "WEBP": ".webp", "PPM": ".ppm"}


def content_format(path: PathLike) -> str | None:
    """The image format of the file's content (``"JPEG"``, ``"PNG"``...) read from its header, or None.

    Suffixes lie (phones and converters write JPEGs named ``.heic``); Pillow's header
    check does not. Only the header is read, so this is cheap on any file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(as_path(path), formats=("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")) as im:
                return im.format if im.format in _SNIFFED_FORMATS else None
    except Image.DecompressionBombError:
        return "oversized"  # an image all the same: load_image says why it is refused
    except (OSError, ValueError, SyntaxError, EOFError):
        return None


def is_image_file(path: PathLike) -> bool:
    """True for an image fgfem reads: by suffix, or by content when the suffix is not an image's."""
    return is_image(path) or (not is_video(path) and content_format(path) is not None)


def is_video(path: PathLike) -> bool:
    """True if the name looks like a video fgfem reads (by suffix, case-insensitive)."""
    return as_path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class LoadedImage:
    """An upright RGB image plus what is needed to write an edited version back faithfully."""

    rgb: np.ndarray
    """H x W x 3 uint8, EXIF orientation applied."""
    path: Path
    format: str
    """PIL format name of the file ("JPEG", "PNG", ...)."""
    exif: bytes | None
    """Raw EXIF block as found in the file (orientation tag still as in the file)."""
    icc_profile: bytes | None
    """ICC profile describing ``rgb``; None when the file had none or it did not describe RGB."""
    had_alpha: bool
    alpha: np.ndarray | None
    """H x W uint8 coverage, oriented like ``rgb``; None without alpha."""
    original_mode: str
    """PIL mode of the file before conversion ("RGB", "L", "P", "I;16", "CMYK", ...)."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright image."""
        return self.rgb.shape[1], self.rgb.shape[0]


def max_pixels_default() -> int:
    """The pixel limit: ``FGFEM_MAX_PIXELS`` if set (a positive integer), else ``DEFAULT_MAX_PIXELS``."""
    env = os.environ.get("FGFEM_MAX_PIXELS")
    if not env:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(env))
    except ValueError:
        raise FgfemError(f"FGFEM_MAX_PIXELS must be a number of pixels, got {env!r}") from None
    if value <= 0:
        raise FgfemError(f"FGFEM_MAX_PIXELS must be positive, got {env!r}")
    return value


def load_image(path: PathLike, *, max_pixels: int | None = None) -> LoadedImage:
    """Read any still image PIL can decode as an upright RGB uint8 array.

    ``max_pixels`` (default: ``max_pixels_default()``) bounds width x height.
    Raises ``FgfemError`` with one line for missing, empty, non-image, corrupt,
    truncated or oversized files.
    """
    path = as_path(path)
    limit = max_pixels if max_pixels is not None else max_pixels_default()
    shown = check_input_file(path, "image")
    try:
        with _pil_open(path, shown, limit) as im:
            return _decode(im, path, shown)
    except FgfemError:
        raise
    except PermissionError:
        raise FgfemError(f"cannot read image {shown}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, zlib.error, struct.error) as exc:
        raise FgfemError(f"cannot read image {shown}: truncated or corrupt file ({_reason(exc)})") from None


def check_input_file(path: Path, kind: str) -> str:
    """``path`` as messages show it, once it is known to be a non-empty file; else one line naming ``kind``.

    Photos and videos are refused alike ("cannot read image ..." / "cannot read video ..."),
    before a decoder or ffmpeg sees them and words the same problem its own way.
    """
    shown = describe_path(path)
    if not path.exists():
        raise FgfemError(f"cannot read {kind} {shown}: no such file")
    if path.is_dir():
        raise FgfemError(f"cannot read {kind} {shown}: it is a folder, not a file")
    if path.stat().st_size == 0:
        raise FgfemError(f"cannot read {kind} {shown}: the file is empty (0 bytes)")
    return shown


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return describe_path(text.splitlines()[0])


def _pil_open(path: Path, shown: str, limit: int) -> Image.Image:
    """Open lazily (header only) and enforce the pixel limit before any pixel is decoded."""
    # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; our own limit
    # replaces both, so PIL's must never trigger below ours (only ever raised, never lowered).
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.1f} MP" if found else "its size"
        raise FgfemError(f"cannot read image {shown}: {size} is above {_limit_hint(limit)}") from None
    except UnidentifiedImageError:
        raise FgfemError(
            f"cannot read image {shown}: not an image file fgfem can decode (wrong extension, or corrupt?)"
        ) from None
    width, height = im.size
    if width * height > limit:
        im.close()
        raise FgfemError(
            f"cannot read image {shown}: {width}x{height} px ({width * height / 1e6:.1f} MP) "
            f"is above {_limit_hint(limit)}"
        )
    if width < 1 or height < 1:
        im.close()
        raise FgfemError(f"cannot read image {shown}: it has no pixels ({width}x{height})")
    return im


def _limit_hint(limit: int) -> str:
    return f"the {limit / 1e6:g} MP safety limit; raise FGFEM_MAX_PIXELS if you trust the file"


def _decode(im: Image.Image, path: Path, shown: str) -> LoadedImage:
    fmt = im.format or "UNKNOWN"
    n_frames = getattr(im, "n_frames", 1)
    if n_frames > 1 and fmt != "MPO":  # MPO: camera JPEG whose extra frames are previews, not content
        warnings.warn(
            f"{shown} has {n_frames} frames; using the first one", MediaWarning, stacklevel=3
        )
    original_mode = im.mode
    im.load()  # some formats (PNG eXIf/iCCP after the pixels) fill ``info`` only now
    exif = im.info.get("exif")
    icc = im.info.get("icc_profile")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PIL warns on odd EXIF; the pixels are what matter
        upright = ImageOps.exif_transpose(im)
    if upright is None:  # pragma: no cover - only with in_place=True
        upright = im
    rgb, alpha, icc = _to_rgb(upright, icc)
    return LoadedImage(
        rgb=rgb,
        path=path,
        format=fmt,
        exif=bytes(exif) if exif else None,
        icc_profile=icc,
        had_alpha=alpha is not None,
        alpha=alpha,
        original_mode=original_mode,
    )


def _to_rgb(im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
    """Convert any PIL mode to (RGB uint8, alpha uint8 or None, ICC profile valid for the RGB)."""
    mode = im.mode
    has_key = "transparency" in im.info
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_grey(im), None, None
    if mode == "CMYK":
        return _cmyk_to_rgb(im, icc), None, None
    if mode in ("RGBA", "RGBa", "PA", "LA", "La") or (mode in ("P", "RGB", "L") and has_key):
        rgba = np.asarray(im.convert("RGBA"))
        rgb, alpha = np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    else:
        rgb, alpha = np.asarray(im.convert("RGB")), None
    keep_icc = icc if _icc_colour_space(icc) == b"RGB " else None
    return np.array(rgb, dtype=np.uint8, copy=True), alpha, keep_icc


def _high_depth_grey(im: Image.Image) -> np.ndarray:
    """16-bit (or 32-bit int / float) greyscale to 8 bit by scaling, never by clipping."""
    data = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        top = 1.0 if data.size and float(np.nanmax(data)) <= 1.0 else 255.0
    elif im.mode.startswith("I;16") or (data.size and data.max() > 255):
        top = 65535.0
    else:
        top = 255.0
    grey = np.clip(np.rint(np.nan_to_num(data) * (255.0 / top)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> np.ndarray:
    """CMYK through its own ICC profile to sRGB when it has one (print files do), else PIL's formula."""
    if icc and _icc_colour_space(icc) == b"CMYK":
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:
                return np.array(converted, dtype=np.uint8)
        except (ImageCms.PyCMSError, OSError):
            pass
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _icc_colour_space(icc: bytes | None) -> bytes | None:
    """The data colour space signature of an ICC profile (bytes 16-20 of its header)."""
    if not icc or len(icc) < 20:
        return None
    return bytes(icc[16:20])


def _format_for(out_path: Path, loaded: LoadedImage | None) -> str:
    suffix = out_path.suffix.lower()
    if not suffix and loaded is not None:
        return "JPEG" if loaded.format == "MPO" else loaded.format
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or suffix not in IMAGE_SUFFIXES or fmt not in Image.SAVE:
        raise FgfemError(
            f"cannot write {describe_path(out_path)}: unknown image type {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(sorted(s for s in IMAGE_SUFFIXES if s != '.jpe'))}"
        )
    return fmt


def _upright_exif(exif: bytes, size: tuple[int, int]) -> bytes | None:
    """The EXIF block with orientation 1 and pixel dimensions matching the written image.

    Pillow writes IFD0 and its sub-IFDs but not IFD1, so the embedded thumbnail
    of the unedited photo is dropped too, which is what we want.
    """
    try:
        parsed = Image.Exif()
        parsed.load(exif)
        parsed[_ORIENTATION_TAG] = 1
        sub = parsed.get_ifd(_EXIF_IFD)
        if _PIXEL_X_DIMENSION in sub or _PIXEL_Y_DIMENSION in sub:
            sub[_PIXEL_X_DIMENSION], sub[_PIXEL_Y_DIMENSION] = size
        return parsed.tobytes()
    except Exception as exc:  # malformed EXIF must not cost the user their edit
        warnings.warn(f"dropping unreadable EXIF data ({_reason(exc)})", MediaWarning, stacklevel=3)
        return None


def check_writable(out_path: PathLike, *, force: bool) -> Path:
    """Refuse to replace an existing file unless ``force``, or to start work whose output cannot be written.

    Called before any work, so a read-only or missing-permission folder fails at once and
    names the folder, instead of failing after the edit with the name of a temporary file.
    """
    out = as_path(out_path)
    if out.is_dir():
        raise FgfemError(f"cannot write {describe_path(out)}: it is a folder")
    if out.exists() and not force:
        raise FgfemError(f"{describe_path(out)} already exists; pass --force to overwrite it")
    check_folder_writable(out.parent)
    return out


def check_folder_writable(folder: PathLike) -> Path:
    """``folder`` (or, when it does not exist yet, the nearest folder above it) accepts new files.

    Outputs are written to a temporary file beside the final name and renamed over it,
    so the folder itself must be writable, even to replace a file that is.
    """
    wanted = as_path(folder) if str(folder) else Path(".")
    existing = wanted
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FgfemError(f"cannot write into {describe_path(wanted)}: {describe_path(existing)} is a file, "
                         "not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FgfemError(f"cannot write into {describe_path(existing)}: permission denied (a read-only folder?)")
    return wanted


PNG_COMPRESS_LEVEL = 1


def save_image(
    loaded_or_none: LoadedImage | None,
    rgb: np.ndarray,
    out_path: PathLike,
    *,
    force: bool = False,
    quality: int = 95,
) -> Path:
    """Write ``rgb`` (H x W x 3 uint8) to ``out_path`` atomically; return the path written.

    With the ``LoadedImage`` it came from, the output keeps that file's EXIF
    (orientation reset to 1, since ``rgb`` is upright), its ICC profile and its
    alpha channel (when the output format holds alpha and the size is unchanged).
    The format follows the output suffix (none: the input's format). JPEG and
    WebP use ``quality``; JPEG at quality >= 90 keeps full chroma resolution
    (4:4:4) so that edited lips and brows do not bleed colour.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"save_image wants an H x W x 3 uint8 array, got {rgb.dtype} {rgb.shape}")
    out = check_writable(out_path, force=force)
    fmt = _format_for(out, loaded_or_none)
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    kwargs: dict[str, object] = {}
    if loaded_or_none is not None:
        image = _with_alpha(image, loaded_or_none, fmt)
        if loaded_or_none.exif and fmt in _EXIF_FORMATS:
            exif = _upright_exif(loaded_or_none.exif, image.size)
            if exif:
                kwargs["exif"] = exif
        if loaded_or_none.icc_profile and fmt in _ICC_FORMATS:
            kwargs["icc_profile"] = loaded_or_none.icc_profile
    if fmt == "JPEG":
        kwargs.update(quality=int(quality), subsampling=0 if quality >= 90 else 2, optimize=True)
    elif fmt == "WEBP":
        kwargs.update(quality=int(quality), method=4)
    elif fmt == "PNG":
        # zlib level 1 (OpenCV's default too): several times faster than PIL's 6 for files ~13 % larger;
        # the encode was the largest stage of an edit after detection (timings: benchmarks/README.md).
        kwargs.update(compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "GIF":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE) if image.mode == "RGB" else image
    try:
        with atomic_path(out) as tmp:
            image.save(tmp, format=fmt, **kwargs)
    except OSError as problem:  # disk full, folder made read-only meanwhile: name the output, not the temp file
        raise FgfemError(f"cannot write {describe_path(out)}: {problem.strerror or _reason(problem)}") from None
    return out


def _with_alpha(image: Image.Image, loaded: LoadedImage, fmt: str) -> Image.Image:
    if not loaded.had_alpha or loaded.alpha is None or fmt not in _ALPHA_FORMATS:
        return image
    if loaded.alpha.shape != (image.height, image.width):
        warnings.warn(
            f"not keeping the alpha channel of {describe_path(loaded.path)}: the image size changed",
            MediaWarning,
            stacklevel=3,
        )
        return image
    image.putalpha(Image.fromarray(np.ascontiguousarray(loaded.alpha), "L"))
    return image


def _natural_key(path: Path) -> list[object]:
    """Sort "frame2" before "frame10" (frame dumps and numbered photos are common inputs)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.as_posix())]


def _skipped(name: str) -> bool:
    """Hidden files and half-written outputs (ours are ``.name.partial-*``) are never inputs."""
    return name.startswith(".") or ".partial-" in name or name.endswith((".part", ".partial", ".tmp"))


def iter_image_files(path_or_dir: PathLike, recursive: bool = False) -> list[Path]:
    """The image files to process: ``[file]`` for one image, or a folder's images in natural order.

    Skips hidden and partial files (and hidden folders when ``recursive``);
    symlinked folders are not followed, so a link loop cannot hang a batch.
    An empty list means the folder holds no images: callers say so.
    """
    root = as_path(path_or_dir)
    shown = describe_path(root)
    if not root.exists():
        raise FgfemError(f"{shown}: no such file or folder")
    if root.is_file():
        if not is_image_file(root):
            raise FgfemError(
                f"{shown} is not an image fgfem reads: neither its suffix ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                f"nor its content (JPEG, PNG, GIF, BMP, TIFF, WebP, PPM)"
            )
        return [root]
    found: list[Path] = []
    if recursive:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(Path(folder) / name for name in files if not _skipped(name))
    else:
        found = [entry for entry in root.iterdir() if not _skipped(entry.name)]
    images = [p for p in found if p.is_file() and is_image_file(p)]
    return sorted(images, key=_natural_key)


def output_path_for(
    input_path: PathLike,
    out: Path | None,
    *,
    suffix_tag: str = "_edited",
    is_batch: bool,
    root: Path | None = None,
) -> Path:
    """Where the result for ``input_path`` goes.

    Single file: ``out`` itself (or ``out/name.ext`` when ``out`` is an existing
    folder); without ``out``, ``name{suffix_tag}.ext`` beside the input.
    Batch: ``out/name.ext`` (keeping the path below ``root`` when given, so
    that a recursive batch cannot collide); without ``out``, the folder
    ``{root}{suffix_tag}`` beside the input folder, never inside it, so a second
    run does not pick up the first run's outputs.
    """
    src = as_path(input_path)
    suffix = _output_suffix(src)
    if not is_batch:
        if out is None:
            return src.with_name(f"{src.stem}{suffix_tag}{suffix}")
        out = as_path(out)
        return out / src.name if out.is_dir() else out
    base = as_path(root) if root is not None else src.parent
    try:
        relative = src.relative_to(base)
    except ValueError:
        relative = Path(src.name)
    if out is None:
        out = base.with_name(f"{base.name}{suffix_tag}")
    return as_path(out) / relative.with_name(relative.stem + suffix)


def _output_suffix(src: Path) -> str:
    """The input's suffix, unless it is no image suffix (a JPEG named ``.heic``): then its content's."""
    if is_image(src) or not src.suffix:
        return src.suffix
    return _SNIFFED_FORMATS.get(content_format(src) or "", src.suffix)
