"""Times as xarray writes them into zarr (CF conventions) -> int64 unix seconds (SSL4EO-S12 v1.1 `time_`)."""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from data_pipelines.ssl4eo_s12.layout import ReleaseFormatError
_CF_UNITS = {"nanoseconds": 10**-9, "microseconds": 10**-6, "milliseconds": 10**-3, "seconds": 1, "minutes": 60,
             "hours": 3600, "days": 86400}
_CF_UNITS.update({"ns": 10**-9, "us": 10**-6, "ms": 10**-3, "s": 1, "min": 60, "h": 3600, "d": 86400})
_UNIX_EPOCH = np.datetime64("1970-01-01T00:00:00", "s")


def decode_times(values: np.ndarray, attrs: Mapping[str, Any], fill_value: Any = None) -> np.ndarray:
    """Times as xarray stores them -> int64 unix seconds, -1 where missing (NaT, fill value, NaN).

    Accepts native datetime64 arrays and CF encodings: numbers with
    `units` "<unit> since <date>" (e.g. "seconds since 2020-11-16 02:30:01",
    "nanoseconds since 1970-01-01").
    """
    values = np.asarray(values)
    if values.dtype.kind == "M":
        missing = np.isnat(values)
        return np.where(missing, -1, values.astype("datetime64[s]").astype(np.int64))
    units = str(attrs.get("units", ""))
    match = re.fullmatch(r"\s*(\w+)\s+since\s+(.+?)\s*", units)
    if not match or match.group(1) not in _CF_UNITS:
        raise ReleaseFormatError(f"time_ units {units!r}: expected CF '<unit> since <date>' as xarray writes them")
    reference = re.sub(r"(Z|\s*[+-]00:?00)$", "", match.group(2).strip()).replace(" ", "T", 1)
    try:
        epoch = int((np.datetime64(reference, "s") - _UNIX_EPOCH) / np.timedelta64(1, "s"))
    except ValueError as err:
        raise ReleaseFormatError(f"time_ units {units!r}: cannot parse the reference date") from err
    scale = _CF_UNITS[match.group(1)]
    missing = np.zeros(values.shape, bool)
    fills = [attrs.get("_FillValue"), attrs.get("missing_value"), fill_value]
    for fill in fills:
        if fill is not None and not (isinstance(fill, float) and np.isnan(fill)):
            missing |= values == fill
    if values.dtype.kind == "f":
        missing |= ~np.isfinite(values)
        seconds = np.rint(np.where(missing, 0, values) * float(scale)).astype(np.int64)
    elif scale < 1:
        seconds = values.astype(np.int64) // round(1 / scale)
    else:
        seconds = values.astype(np.int64) * int(scale)
    return np.where(missing, -1, seconds + epoch)
