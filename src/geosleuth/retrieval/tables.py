"""Reading the tables users bring (CSV or Parquet) into named columns, with errors that name the
file, the column and the row."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from geosleuth.errors import EmptySourceError, InputNotFoundError, MissingDependencyError, TableError

LAT_NAMES = ("lat", "latitude", "gps_lat", "y")
LON_NAMES = ("lon", "lng", "long", "longitude", "gps_lon", "x")


def read_table(path: Path) -> dict[str, list[str]]:
    """Columns of a CSV (any delimiter Sniffer recognises) or Parquet file, as strings."""
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise MissingDependencyError("pyarrow", "parquet", f"Reading {path.name}") from exc
        table = pq.read_table(path)
        return {
            name: ["" if v is None else str(v) for v in table.column(name).to_pylist()]
            for name in table.column_names
        }
    with path.open(newline="", encoding="utf-8-sig") as fh:
        sample = fh.read(64 * 1024)
        fh.seek(0)
        try:
            dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(fh, dialect=dialect)
        if not reader.fieldnames:
            raise EmptySourceError(f"{path}: the table has no header row")
        columns: dict[str, list[str]] = {name: [] for name in reader.fieldnames}
        for row in reader:
            for name in reader.fieldnames:
                columns[name].append((row.get(name) or "").strip())
    return columns


def find_column(columns: dict[str, list[str]], candidates: Sequence[str], path: Path, what: str) -> str:
    lowered = {name.lower().strip(): name for name in columns}
    for c in candidates:
        if c in lowered:
            return lowered[c]
    raise TableError(
        f"{path}: no {what} column; expected one of {', '.join(candidates)} (found: {', '.join(columns) or 'none'})"
    )


def latlon_columns(columns: dict[str, list[str]], path: Path) -> NDArray[np.float64]:
    """(n, 2) float64 (lat, lon), validated; the error names the first bad row (1-based, after the header)."""
    lat_name = find_column(columns, LAT_NAMES, path, "latitude")
    lon_name = find_column(columns, LON_NAMES, path, "longitude")
    lat, lon = columns[lat_name], columns[lon_name]
    if not lat:
        raise EmptySourceError(f"{path}: the table has a header but no rows")
    out = np.empty((len(lat), 2), dtype=np.float64)
    for i, (a, b) in enumerate(zip(lat, lon, strict=True)):
        try:
            out[i] = (float(a), float(b))
        except ValueError:
            raise TableError(f"{path}: row {i + 2} has lat={a!r}, lon={b!r}, which are not numbers") from None
    bad = ~(np.isfinite(out).all(axis=1) & (np.abs(out[:, 0]) <= 90) & (np.abs(out[:, 1]) <= 180))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(
            f"{path}: row {i + 2} has lat={lat[i]}, lon={lon[i]}, outside [-90, 90] x [-180, 180]"
        )
    return out
