"""GeoTIFF band reading for the real-data builders (tifffile + numpy only).

Three on-disk conventions occur in the datasets we convert:

* one multi-band file, pixel-interleaved `[H, W, C]` (EuroSAT-MS),
* one multi-band file, band-sequential `[C, H, W]` (planar or one page per
  band; GDAL writes this for `INTERLEAVE=BAND`),
* one single-band file per band at the band's native resolution (SSL4EO-S12,
  BigEarthNet), where 20 m / 60 m bands have 1/2 or 1/6 of the 10 m size.

Everything returned is channels-last numpy with an explicit dtype, so the
builders can hand it to `seamo_jax.sensors.validate_array` unchanged.

Resampling to the 10 m grid (`resample`, from `seamo_jax.data.band_groups`): "bilinear" (default) interpolates
with half-pixel-centred sampling and edge clamping, i.e. the same grid as
OpenCV `INTER_LINEAR` / PyTorch `align_corners=False`, which is what the
SSL4EO-S12 reference loader applies; "nearest" repeats each source pixel
(exact for integer factors, keeps original values, e.g. for masks).

Bit depth is part of what a file means: `read_band(..., dtype=...)` refuses
(`BitDepthError`) an 8-bit file where 16 bits are expected (SSL4EO-S12's
8-bit release is rescaled, not reflectance*10000) and the reverse, float
files where integers are expected and integer files where floats (dB) are.
Compressed files (e.g. JPEG, as in SSL4EO-S12's 8-bit release) are decoded by
tifffile with the `imagecodecs` codecs; without them `CodecError` says what to
install.

Georeferencing (`center_latlon`) reads the GeoTIFF tags: geographic files
(SSL4EO-S12 is exported as `+proj=latlong`) give lon/lat directly; WGS 84 UTM
files (EuroSAT, BigEarthNet) are converted with the standard inverse
transverse-Mercator series (sub-metre accuracy, far below a 10 m pixel).
"""

from __future__ import annotations

import math
import os
import struct
from typing import Mapping, Sequence

import numpy as np
import tifffile

# The resampling lives with the record layouts (seamo_jax.data.band_groups) so that `to_grid` of a native
# record and a grid build of the same files run the same code: bitwise the same 10 m arrays.
from seamo_jax.data.band_groups import RESAMPLE_METHODS, resample  # noqa: F401  (re-exported)



class GeoTiffError(ValueError):
    """A GeoTIFF is missing, unreadable, or not shaped as its layout says."""


class BitDepthError(GeoTiffError):
    """A file's sample type means another encoding than the layout's (8 vs 16 bit, integer vs float)."""


class CodecError(GeoTiffError):
    """A compressed GeoTIFF whose codec is not installed (tifffile decodes JPEG etc. with imagecodecs)."""


# Plain-TIFF fast path: the release files are small, uncompressed, striped,
# single-image TIFFs; parsing their one IFD with struct is ~10x cheaper than
# tifffile's general reader (which costs ~1 ms per file, i.e. most of the
# conversion time at 60 files per SSL4EO-S12 location). Anything else
# (compression, tiles, BigTIFF, several pages) goes to tifffile.
_TAG_TYPES = {3: ("H", 2), 4: ("I", 4)}  # SHORT, LONG: all that the tags below use
_WANTED_TAGS = {256, 257, 258, 259, 273, 277, 279, 284, 322, 339}
_SAMPLE_DTYPES = {(1, 8): "u1", (1, 16): "u2", (1, 32): "u4", (2, 8): "i1", (2, 16): "i2", (2, 32): "i4",
                  (3, 32): "f4", (3, 64): "f8"}


def _read_plain_tiff(data: bytes) -> tuple[np.ndarray, str] | None:
    """Decodes an uncompressed, striped, single-IFD classic TIFF; None for anything else."""
    if data[:4] == b"II*\x00":
        endian = "<"
    elif data[:4] == b"MM\x00*":
        endian = ">"
    else:
        return None
    (ifd,) = struct.unpack_from(endian + "I", data, 4)
    (count,) = struct.unpack_from(endian + "H", data, ifd)
    tags: dict[int, tuple[int, ...]] = {}
    for i in range(count):
        tag, typ, n, raw = struct.unpack_from(endian + "HHI4s", data, ifd + 2 + 12 * i)
        if tag not in _WANTED_TAGS:
            continue
        if typ not in _TAG_TYPES:
            return None
        code, size = _TAG_TYPES[typ]
        if n * size <= 4:
            tags[tag] = struct.unpack_from(f"{endian}{n}{code}", raw)
        else:
            (offset,) = struct.unpack_from(endian + "I", raw)
            tags[tag] = struct.unpack_from(f"{endian}{n}{code}", data, offset)
    (next_ifd,) = struct.unpack_from(endian + "I", data, ifd + 2 + 12 * count)
    if next_ifd != 0 or 322 in tags or tags.get(259, (1,))[0] != 1 or 273 not in tags or 279 not in tags:
        return None
    bits, formats = set(tags.get(258, (1,))), set(tags.get(339, (1,)))
    if len(bits) != 1 or len(formats) != 1:
        return None
    dtype = _SAMPLE_DTYPES.get((formats.pop(), bits.pop()))
    if dtype is None:
        return None
    width, height, samples = tags[256][0], tags[257][0], tags.get(277, (1,))[0]
    planar = tags.get(284, (1,))[0]
    offsets, counts = tags[273], tags[279]
    if all(offsets[i] + counts[i] == offsets[i + 1] for i in range(len(offsets) - 1)):
        # one copy when strips are back to back; bytearray keeps the result writable
        payload = bytearray(memoryview(data)[offsets[0]:offsets[-1] + counts[-1]])
    else:
        payload = bytearray(b"".join(data[o:o + c] for o, c in zip(offsets, counts)))
    values = np.frombuffer(payload, np.dtype(dtype).newbyteorder(endian))
    expected = width * height * samples
    if values.size < expected:
        return None
    values = values[:expected]
    if samples == 1:
        return values.reshape(height, width), "YX"
    if planar == 2:
        return values.reshape(samples, height, width), "SYX"
    return values.reshape(height, width, samples), "YXS"


def _read_with_axes(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Returns (array, tifffile-style axes string), errors name the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise GeoTiffError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            data = f.read()
        fast = _read_plain_tiff(data)
        if fast is not None:
            values, axes = fast
            return values.astype(values.dtype.newbyteorder("="), copy=False), axes
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            compression = getattr(tif.pages[0].compression, "name", str(tif.pages[0].compression))
            try:
                return series.asarray(), series.axes
            except (ValueError, ImportError) as err:
                if "imagecodecs" in str(err):
                    raise CodecError(f"{path}: {compression}-compressed; decoding it needs the imagecodecs package "
                                     "(pip install imagecodecs, or the seamo_jax[ssl4eo] extra)") from err
                raise
    except GeoTiffError:
        raise
    except (tifffile.TiffFileError, ValueError, OSError, struct.error) as err:
        raise GeoTiffError(f"{path}: cannot read GeoTIFF ({err})") from err


def _check_dtype(values: np.ndarray, dtype: np.dtype | str | None, path: str) -> np.ndarray:
    """Casts to `dtype`, refusing casts that would silently change values.

    Integer files must already be integers that fit (e.g. a uint16 S2 band
    stored as int16 with no negative values is accepted); float -> int is
    refused because it means the file holds a different quantity than the
    layout promises (e.g. reflectance in [0, 1] instead of x10000), and so
    are 8-bit files for wider integers (or the reverse) and integer files for
    floats (`BitDepthError`).
    """
    if dtype is None:
        return values
    dtype = np.dtype(dtype)
    if values.dtype == dtype:
        return values
    if np.issubdtype(dtype, np.floating) and not np.issubdtype(values.dtype, np.floating):
        raise BitDepthError(f"{path}: stored dtype {values.dtype} (integer), expected {dtype}")
    if np.issubdtype(dtype, np.integer):
        if not np.issubdtype(values.dtype, np.integer):
            raise BitDepthError(f"{path}: stored dtype {values.dtype}, expected integer {dtype}")
        if (values.dtype.itemsize == 1) != (dtype.itemsize == 1):
            raise BitDepthError(f"{path}: stored dtype {values.dtype} ({values.dtype.itemsize * 8}-bit), "
                                f"expected {dtype} ({dtype.itemsize * 8}-bit)")
        info = np.iinfo(dtype)
        if values.size and (values.min() < info.min or values.max() > info.max):
            raise GeoTiffError(f"{path}: values [{values.min()}, {values.max()}] do not fit {dtype}")
    return values.astype(dtype)


def read_multiband(path: str | os.PathLike, *, num_bands: int | None = None,
                   dtype: np.dtype | str | None = None) -> np.ndarray:
    """Reads a multi-band GeoTIFF as channels-last `[H, W, C]`.

    Accepts pixel-interleaved (`YXS`), planar (`SYX`) and one-page-per-band
    (`QYX`/`IYX`/`CYX`/`ZYX`) files; a single-band file gives `[H, W, 1]`.
    Raises GeoTiffError naming the file on a band-count or dtype mismatch.
    """
    values, axes = _read_with_axes(path)
    path = os.fspath(path)
    if values.ndim == 2:
        values = values[:, :, None]
    elif values.ndim == 3 and axes.endswith("YXS"):
        pass
    elif values.ndim == 3 and axes.endswith("YX"):
        values = np.moveaxis(values, 0, -1)  # band-sequential -> channels last
    else:
        raise GeoTiffError(f"{path}: unsupported layout axes={axes!r} shape={values.shape}")
    if num_bands is not None and values.shape[-1] != num_bands:
        raise GeoTiffError(f"{path}: {values.shape[-1]} bands, expected {num_bands}")
    return np.ascontiguousarray(_check_dtype(values, dtype, path))


def read_band(path: str | os.PathLike, *, dtype: np.dtype | str | None = None) -> np.ndarray:
    """Reads a single-band GeoTIFF as `[H, W]` (a `[1, H, W]`/`[H, W, 1]` file is squeezed)."""
    values, axes = _read_with_axes(path)
    path = os.fspath(path)
    if values.ndim == 3 and 1 in (values.shape[0], values.shape[-1]):
        values = values.reshape(values.shape[1:] if values.shape[0] == 1 else values.shape[:2])
    if values.ndim != 2:
        raise GeoTiffError(f"{path}: expected one band, got shape {values.shape} (axes {axes!r})")
    return _check_dtype(values, dtype, path)


def read_band_stack(paths: Sequence[str | os.PathLike], *, out_hw: Sequence[int], dtype: np.dtype | str,
                    method: str = "bilinear", native_hw: Mapping[int, Sequence[int]] | None = None) -> np.ndarray:
    """Reads one single-band file per channel into `[H, W, C]` on the `out_hw` grid.

    Args:
      paths: one file per output channel, in channel order.
      out_hw: target (H, W), the 10 m grid.
      dtype: dtype every file must hold (see `_check_dtype`).
      method: resampling for bands stored at a coarser resolution.
      native_hw: optional channel index -> expected stored (h, w); a file of
        another size raises GeoTiffError naming it (catches a 20 m band
        written at 60 m, or a truncated tile).
    """
    out = np.empty((int(out_hw[0]), int(out_hw[1]), len(paths)), dtype=np.dtype(dtype))
    for channel, path in enumerate(paths):
        band = read_band(path, dtype=dtype)
        if native_hw is not None and channel in native_hw and band.shape != tuple(native_hw[channel]):
            raise GeoTiffError(f"{os.fspath(path)}: shape {band.shape}, expected {tuple(native_hw[channel])}")
        if band.shape[0] > out.shape[0] or band.shape[1] > out.shape[1]:
            raise GeoTiffError(f"{os.fspath(path)}: shape {band.shape} larger than the target grid {out.shape[:2]}")
        out[:, :, channel] = resample(band, out.shape[:2], method)
    return out


def resample_stack(bands: Sequence[np.ndarray], out_hw: Sequence[int], method: str = "bilinear") -> np.ndarray:
    """`[h_c, w_c]` bands of any sizes -> `[H, W, C]` on the `out_hw` grid (dtype of the first band).

    Every band is resampled to `out_hw` whatever its stored size, as the
    SSL4EO-S12 reference loader does (`cv2.resize(..., (264, 264),
    INTER_LINEAR_EXACT)` on every band file): a band covers the tile's
    footprint at any size, so a 20 m band exported one pixel short (131 px)
    or a 10 m band at 263 px lands on the same 10 m grid.
    """
    out = np.empty((int(out_hw[0]), int(out_hw[1]), len(bands)), dtype=bands[0].dtype)
    for channel, band in enumerate(bands):
        out[:, :, channel] = resample(band, out.shape[:2], method)
    return out


# ---------------------------------------------------------------- georeferencing

def _utm_to_latlon(easting: float, northing: float, zone: int, north: bool) -> tuple[float, float]:
    """Inverse transverse Mercator on WGS 84 (Snyder 1987, eqs. 8-18 ff.). Returns (lat, lon) degrees."""
    a, f, k0 = 6378137.0, 1 / 298.257223563, 0.9996
    e2 = f * (2 - f)
    ep2 = e2 / (1 - e2)
    x = easting - 500000.0
    y = northing if north else northing - 10000000.0
    m = y / k0
    mu = m / (a * (1 - e2 / 4 - 3 * e2**2 / 64 - 5 * e2**3 / 256))
    e1 = (1 - math.sqrt(1 - e2)) / (1 + math.sqrt(1 - e2))
    phi1 = (mu + (3 * e1 / 2 - 27 * e1**3 / 32) * math.sin(2 * mu)
            + (21 * e1**2 / 16 - 55 * e1**4 / 32) * math.sin(4 * mu)
            + (151 * e1**3 / 96) * math.sin(6 * mu) + (1097 * e1**4 / 512) * math.sin(8 * mu))
    sin1, cos1, tan1 = math.sin(phi1), math.cos(phi1), math.tan(phi1)
    n1 = a / math.sqrt(1 - e2 * sin1**2)
    t1, c1 = tan1**2, ep2 * cos1**2
    r1 = a * (1 - e2) / (1 - e2 * sin1**2) ** 1.5
    d = x / (n1 * k0)
    lat = phi1 - (n1 * tan1 / r1) * (d**2 / 2 - (5 + 3 * t1 + 10 * c1 - 4 * c1**2 - 9 * ep2) * d**4 / 24
                                     + (61 + 90 * t1 + 298 * c1 + 45 * t1**2 - 252 * ep2 - 3 * c1**2) * d**6 / 720)
    lon = (d - (1 + 2 * t1 + c1) * d**3 / 6
           + (5 - 2 * c1 + 28 * t1 - 3 * c1**2 + 8 * ep2 + 24 * t1**2) * d**5 / 120) / cos1
    lon0 = math.radians((zone - 1) * 6 - 180 + 3)
    return math.degrees(lat), math.degrees(lon0 + lon)


def utm_to_latlon(easting: float, northing: float, epsg: int) -> tuple[float, float]:
    """(lat, lon) degrees of a WGS 84 / UTM point given its EPSG code (326zz north, 327zz south)."""
    if 32601 <= epsg <= 32660:
        return _utm_to_latlon(easting, northing, epsg - 32600, True)
    if 32701 <= epsg <= 32760:
        return _utm_to_latlon(easting, northing, epsg - 32700, False)
    raise ValueError(f"EPSG:{epsg} is not a WGS 84 UTM zone")


def center_latlon(path: str | os.PathLike) -> tuple[float, float] | None:
    """(lat, lon) of the tile centre from the GeoTIFF tags, or None when not georeferenced.

    Supports geographic CRSs (lon/lat degrees) and WGS 84 UTM; other
    projections return None rather than a wrong location.
    """
    path = os.fspath(path)
    try:
        with tifffile.TiffFile(path) as tif:
            geo = tif.geotiff_metadata
            shape = tif.pages[0].shape
    except (tifffile.TiffFileError, ValueError, OSError) as err:
        raise GeoTiffError(f"{path}: cannot read GeoTIFF tags ({err})") from err
    if not geo or "ModelPixelScale" not in geo or "ModelTiepoint" not in geo:
        return None
    height, width = shape[0], shape[1]
    if len(shape) == 3 and shape[-1] > 4 and shape[0] <= shape[-1]:  # band-sequential page [C, H, W]
        height, width = shape[1], shape[2]
    scale_x, scale_y = geo["ModelPixelScale"][:2]
    tie = geo["ModelTiepoint"]
    # Tiepoint maps raster (i, j) to model (x, y); y grows north, rows grow south.
    x = tie[3] + (width / 2 - tie[0]) * scale_x
    y = tie[4] - (height / 2 - tie[1]) * scale_y
    model_type = int(geo.get("GTModelTypeGeoKey", 0))
    if model_type == 2:  # geographic: x = lon, y = lat
        return float(y), float(x)
    epsg = int(geo.get("ProjectedCSTypeGeoKey", 0))
    try:
        return utm_to_latlon(x, y, epsg)
    except ValueError:
        return None
