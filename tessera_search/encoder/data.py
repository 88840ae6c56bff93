"""Encoder inputs: tile layouts and datacubes in, normalised model sequences out.

Three input forms are read into one :class:`TileInputs` (S2 in the model's band order,
S1 in the official encoded-dB int16 scale; ``reference/encoder-spec.md`` section 1):

* the official preprocessed tile directory (``bands.npy``, ``masks.npy``, ``doys.npy``,
  ``sar_{ascending,descending}{,_doy}.npy``), memory-mapped (:func:`load_tile_dir`);
* an xarray / netCDF datacube with named band variables (``S2-L2A-B04`` or ``B04``,
  ``S1-SIGMA0-VV`` or ``VV``; :func:`load_datacube`), georeferenced by its x/y coordinates
  and CRS;
* a directory of per-acquisition GeoTIFFs ``..._<yyyymmdd>T..._<BAND>.tif``
  (:func:`load_geotiff_stack`), resampled (nearest) onto the finest band's grid.

A missing S2 band is an error unless ``substitute`` names a stand-in (``{"B8A": "B08"}``);
a missing S1 sensor is read as "no S1 observations", which the official code represents as
zero rows (see ``docs/encoder.md``).

Model inputs (per pixel, (T, C + 1) float32 with the raw DOY last):

* ``random`` sampling (v1.0): ``size`` draws from the usable observations (without
  replacement when there are enough, else with), indices sorted. The draws are seeded
  per pixel (:func:`sample_random`: a counter-based hash of seed, pixel index and draw), so a
  rerun, a different batch size or a different block size gives the same embeddings. The
  official rule, numpy's legacy ``RandomState.choice`` drawn pixel by pixel, S2 for a batch
  then S1, is :func:`sample_official`.
* ``bucket`` sampling (v1.1, deterministic): all usable observations resampled to the
  next multiple of 8 (:func:`bucket_indices`).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CorruptTileError, InvalidInputError, MissingDependencyError
from .config import S2_BAND_ORDER

__all__ = [
    "S1_DUMMY_DOY",
    "TileInputs",
    "encode_s1_db",
    "load_datacube",
    "load_geotiff_stack",
    "load_input",
    "load_tile_dir",
    "parse_substitutions",
    "scl_to_mask",
]

S1_DUMMY_DOY = 180  # DOY of the placeholder row the official dataset puts in an empty orbit
_SCL_UNUSABLE = (0, 1, 2, 3, 8, 9)  # no data, saturated, dark, cloud shadow, cloud medium/high
_F32 = np.float32


@dataclass
class TileInputs:
    """One tile's raw time series, in the official layout's units.

    bands (T2, H, W, 10) S2 DN (reflectance x 10000) in :data:`S2_BAND_ORDER`, 0 = no data;
    masks (T2, H, W) 1 = usable; doys (T2,) day of year; sar_asc/sar_desc (Ta/Td, H, W, 2)
    [VV, VH] encoded dB ``(20 log10(v) + 50) * 200``, 0 = no data, with their DOYs.
    ``grid`` is the georeferencing (None for the official layout, which carries none);
    ``year`` the embedding year when the input says it; ``notes`` say what was assumed.
    """

    bands: np.ndarray
    masks: np.ndarray
    doys: np.ndarray
    sar_asc: np.ndarray
    sar_asc_doy: np.ndarray
    sar_desc: np.ndarray
    sar_desc_doy: np.ndarray
    name: str = "tile"
    grid: object | None = None
    year: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) pixels."""
        return (int(self.bands.shape[1]), int(self.bands.shape[2]))

    def validate(self) -> None:
        """Check shapes agree; raise :class:`CorruptTileError` naming the array otherwise."""
        b = self.bands
        if b.ndim != 4 or b.shape[3] != len(S2_BAND_ORDER):
            raise CorruptTileError(f"{self.name}: bands must be (T, H, W, 10), got {b.shape}")
        t, h, w = b.shape[:3]
        if self.masks.shape != (t, h, w):
            raise CorruptTileError(f"{self.name}: masks {self.masks.shape} do not match bands {(t, h, w)}")
        if self.doys.shape != (t,):
            raise CorruptTileError(f"{self.name}: doys {self.doys.shape} do not match {t} S2 timesteps")
        for label, arr, doy in (("sar_ascending", self.sar_asc, self.sar_asc_doy), ("sar_descending", self.sar_desc, self.sar_desc_doy)):
            if arr.ndim != 4 or arr.shape[1:] != (h, w, 2):
                raise CorruptTileError(f"{self.name}: {label} must be (T, {h}, {w}, 2), got {arr.shape}")
            if doy.shape != (arr.shape[0],):
                raise CorruptTileError(f"{self.name}: {label}_doy {doy.shape} does not match {arr.shape[0]} timesteps")


# --------------------------------------------------------------------------- loading


def _np_load(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptTileError(f"{path} is not a readable .npy array: {exc}") from exc


def load_tile_dir(path: str | os.PathLike[str], mmap: bool = True) -> TileInputs:
    """Read an official preprocessed tile directory (memory-mapped by default).

    ``bands.npy``, ``masks.npy`` and ``doys.npy`` are required. A missing SAR orbit file pair
    is read as an orbit with zero timesteps (what the official code does with an empty orbit).
    """
    path = Path(path)
    if not (path / "bands.npy").is_file():
        raise InvalidInputError(f"{path} is not an official tile directory (no bands.npy)")
    h_w = None
    arrays: dict[str, np.ndarray] = {}
    for name in ("bands", "masks", "doys"):
        f = path / f"{name}.npy"
        if not f.is_file():
            raise CorruptTileError(f"tile {path} lacks {name}.npy")
        arrays[name] = _np_load(f, mmap)
    h_w = arrays["bands"].shape[1:3] if arrays["bands"].ndim == 4 else (0, 0)
    notes = []
    for orbit in ("ascending", "descending"):
        f, fd = path / f"sar_{orbit}.npy", path / f"sar_{orbit}_doy.npy"
        if f.is_file() and fd.is_file():
            arrays[orbit] = _np_load(f, mmap)
            arrays[orbit + "_doy"] = np.asarray(_np_load(fd, False))
        else:
            arrays[orbit] = np.zeros((0, *h_w, 2), dtype=np.int16)
            arrays[orbit + "_doy"] = np.zeros((0,), dtype=np.int16)
            notes.append(f"no sar_{orbit}.npy: S1 {orbit} read as no observations")
    tile = TileInputs(
        bands=arrays["bands"], masks=arrays["masks"], doys=np.asarray(arrays["doys"]),
        sar_asc=arrays["ascending"], sar_asc_doy=arrays["ascending_doy"],
        sar_desc=arrays["descending"], sar_desc_doy=arrays["descending_doy"],
        name=path.name, notes=notes,
    )
    tile.validate()
    return tile


def parse_substitutions(items: Sequence[str] | dict[str, str] | None) -> dict[str, str]:
    """``["B8A=B08"]`` -> ``{"B8A": "B08"}``: use band B08's values where B8A is missing."""
    if not items:
        return {}
    if isinstance(items, dict):
        pairs = items.items()
    else:
        pairs = []
        for item in items:
            if "=" not in item:
                raise InvalidInputError(f"band substitution {item!r} is not MISSING=USE, e.g. B8A=B08")
            a, b = item.split("=", 1)
            pairs.append((a, b))
    out = {}
    for a, b in pairs:
        a, b = _norm_band(a), _norm_band(b)
        if a not in S2_BAND_ORDER or b not in S2_BAND_ORDER:
            raise InvalidInputError(f"band substitution {a}={b}: both must be S2 bands of {', '.join(S2_BAND_ORDER)}")
        out[a] = b
    return out


def _norm_band(name: str) -> str:
    m = re.fullmatch(r"[Bb]0?(\d{1,2}|8[Aa])", name.strip())
    if not m:
        return name.strip().upper()
    code = m.group(1).upper()
    return "B8A" if code == "8A" else f"B{int(code):02d}"


def _band_token(varname: str) -> str | None:
    """S2 band code (B04, B8A, ...) or S1 polarisation (VV, VH) named by a variable, else None."""
    tokens = re.split(r"[-_.\s]+", varname.upper())
    for tok in reversed(tokens):
        if re.fullmatch(r"B0?\d{1,2}|B8A", tok):
            return _norm_band(tok)
        if tok in ("VV", "VH"):
            return tok
        if tok in ("SCL", "MASK"):
            return tok
    return None


def _assemble_s2(found: dict[str, np.ndarray], substitute: dict[str, str], where: str) -> tuple[np.ndarray, list[str]]:
    notes = []
    out = []
    for band in S2_BAND_ORDER:
        if band in found:
            out.append(found[band])
            continue
        sub = substitute.get(band)
        if sub is None:
            have = ", ".join(b for b in S2_BAND_ORDER if b in found) or "none"
            raise InvalidInputError(
                f"{where} lacks Sentinel-2 band {band} (has: {have}). TESSERA needs all of "
                f"{', '.join(S2_BAND_ORDER)}; to use another band in its place pass "
                f"substitute_bands={band}=<BAND> (e.g. {band}=B08 for B8A), see docs/encoder.md"
            )
        if sub not in found:
            raise InvalidInputError(f"{where}: substitute band {sub} for {band} is not in the input either")
        out.append(found[sub])
        notes.append(f"band {band} missing: substituted by {sub}")
    return np.stack(out, axis=-1), notes


def encode_s1_db(db: np.ndarray) -> np.ndarray:
    """dB backscatter (10 log10 of linear power) -> official int16 ``(20 log10(v) + 50) * 200``.

    Non-finite input becomes 0 (no data); values clip to [0, 32767] and truncate, as upstream.
    """
    db = np.asarray(db, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        enc = np.clip((2.0 * db + 50.0) * 200.0, 0, 32767)
    enc = np.where(np.isfinite(enc), enc, 0)
    return enc.astype(np.int16)


def _s1_to_db(values: np.ndarray, encoding: str, nodata: float | None) -> np.ndarray:
    v = np.asarray(values)
    invalid = ~np.isfinite(v.astype(np.float64))
    if nodata is not None:
        invalid |= v == nodata
    if encoding == "auto":
        if np.issubdtype(v.dtype, np.integer):
            encoding = "worldcereal"
        else:
            finite = v[np.isfinite(v)]
            encoding = "db" if finite.size and np.median(finite) < 0 else "linear"
    vf = v.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if encoding == "worldcereal":  # openEO/WorldCereal compression: dB = 20 log10(DN) - 83
            invalid |= vf <= 0
            db = 20.0 * np.log10(vf) - 83.0
        elif encoding == "db":
            db = vf
        elif encoding == "linear":
            invalid |= vf <= 0
            db = 10.0 * np.log10(vf)
        elif encoding == "tessera":
            invalid |= vf == 0
            db = (vf / 200.0 - 50.0) / 2.0
        else:
            raise InvalidInputError(f"unknown S1 encoding {encoding!r}; use auto, worldcereal, db, linear or tessera")
    return np.where(invalid, np.nan, db)


def scl_to_mask(scl: np.ndarray) -> np.ndarray:
    """Sentinel-2 SCL classes -> uint8 usable mask (0 for classes 0, 1, 2, 3, 8, 9)."""
    return (~np.isin(np.asarray(scl), _SCL_UNUSABLE)).astype(np.uint8)


def _s2_validity(bands: np.ndarray, nodata: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 10) values -> (uint16 DN with 0 at no data, (T, H, W) bool all-bands-valid)."""
    b = np.asarray(bands)
    bf = b.astype(np.float64)
    bad = ~np.isfinite(bf)
    if nodata is not None:
        bad |= b == nodata
    bad |= bf < 0
    valid = ~bad.any(axis=-1)
    dn = np.where(bad, 0, np.clip(np.nan_to_num(bf), 0, 65534)).astype(np.uint16)
    dn[~valid] = 0
    return dn, valid


def _year_of(dates: Sequence[_dt.date]) -> int | None:
    if not dates:
        return None
    years = [d.year for d in dates]
    counts = {y: years.count(y) for y in set(years)}
    return max(counts, key=lambda y: (counts[y], y))


def grid_for(epsg: int, transform: tuple[float, ...], height: int, width: int):
    """A TileGrid for a patch: its own transform, named by the tile whose cell holds its centre."""
    from pyproj import Transformer

    from ..grid import TileGrid, tile_for_point

    a, _, c, _, e, f = transform
    cx, cy = c + a * width / 2.0, f + e * height / 2.0
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(cx, cy)
    return TileGrid(tile_for_point(float(lon), float(lat)), int(epsg), tuple(float(v) for v in transform), int(height), int(width))


def epsg_from_crs(crs_text: str, where: str) -> int:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        epsg = CRS.from_user_input(crs_text).to_epsg()
    except CRSError as exc:
        raise InvalidInputError(f"{where}: unreadable CRS: {exc}") from exc
    if epsg is None:
        raise InvalidInputError(f"{where}: its CRS has no EPSG code")
    return int(epsg)


def load_datacube(
    path: str | os.PathLike[str],
    substitute: dict[str, str] | None = None,
    s1_encoding: str = "auto",
    s1_orbit: str = "ascending",
) -> TileInputs:
    """Read an xarray-readable datacube (netCDF) with dims (time, y, x) and named bands.

    S2 variables are recognised by a band token (``S2-L2A-B04``, ``B04``, ``b8a``); S1 by
    ``VV``/``VH``; an ``SCL`` or ``MASK`` variable gives the cloud mask. uint16 65535 (or
    ``_FillValue``/``nodata``) and NaN are no data; an observation is usable only where all
    ten S2 bands are valid (and the cloud mask allows it). S1 ``s1_encoding``: ``auto``
    (integers -> WorldCereal compression ``dB = 20 log10(DN) - 83``; floats -> dB if their
    median is negative else linear power), or one of ``worldcereal``, ``db``, ``linear``,
    ``tessera``. Orbit direction is not in such cubes; S1 goes to ``s1_orbit``.
    """
    try:
        import xarray as xr
    except ImportError as exc:
        raise MissingDependencyError("reading datacubes needs xarray: pip install xarray h5netcdf") from exc
    path = Path(path)
    substitute = dict(substitute or {})
    try:
        ds = xr.open_dataset(path, mask_and_scale=False, decode_times=True)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not a readable datacube: {exc}") from exc
    with ds:
        tdim = next((d for d in ds.dims if str(d).lower() in ("t", "time", "date")), None)
        ydim = next((d for d in ds.dims if str(d).lower() in ("y", "lat", "northing")), None)
        xdim = next((d for d in ds.dims if str(d).lower() in ("x", "lon", "easting")), None)
        if tdim is None or ydim is None or xdim is None:
            raise InvalidInputError(f"{path}: needs time, y and x dimensions, has {list(ds.dims)}")
        times = ds[tdim].values.astype("datetime64[D]")
        order = np.argsort(times, kind="stable")
        dates = [_dt.date.fromisoformat(str(t)) for t in times[order]]
        doys = np.array([d.timetuple().tm_yday for d in dates], dtype=np.int32)
        ys, xs = ds[ydim].values.astype(np.float64), ds[xdim].values.astype(np.float64)
        flip_y = len(ys) > 1 and ys[1] > ys[0]
        flip_x = len(xs) > 1 and xs[1] < xs[0]

        def grab(var) -> tuple[np.ndarray, float | None]:
            da = ds[var].transpose(tdim, ydim, xdim)
            arr = np.asarray(da.values)[order]
            if flip_y:
                arr = arr[:, ::-1]
            if flip_x:
                arr = arr[:, :, ::-1]
            nod = da.attrs.get("_FillValue", da.attrs.get("nodata", da.encoding.get("_FillValue")))
            if nod is None and arr.dtype == np.uint16:
                nod = 65535
            return arr, (None if nod is None else float(np.asarray(nod).ravel()[0]))

        s2: dict[str, np.ndarray] = {}
        s2_nodata: dict[str, float | None] = {}
        s1: dict[str, tuple[np.ndarray, float | None]] = {}
        mask = None
        for var in ds.data_vars:
            if set(ds[var].dims) != {tdim, ydim, xdim}:
                continue
            tok = _band_token(str(var))
            if tok is None or (str(var).upper().startswith("S1") and tok not in ("VV", "VH")):
                continue
            if tok in ("VV", "VH"):
                s1[tok] = grab(var)
            elif tok == "SCL":
                mask = scl_to_mask(grab(var)[0])
            elif tok == "MASK":
                m, nod = grab(var)
                mask = ((m != 0) & (m != (nod if nod is not None else -1))).astype(np.uint8)
            elif tok in S2_BAND_ORDER:
                s2[tok], s2_nodata[tok] = grab(var)
        crs_text = None
        for cand in ("crs", "spatial_ref"):
            if cand in ds.variables:
                attrs = ds[cand].attrs
                crs_text = attrs.get("crs_wkt") or attrs.get("spatial_ref")
                if crs_text:
                    break
        if not crs_text:
            crs_text = ds.attrs.get("crs")
    where = f"datacube {path.name}"
    if not s2:
        raise InvalidInputError(f"{where} has no Sentinel-2 band variables (e.g. S2-L2A-B04 or B04)")
    nodata_vals = {v for v in s2_nodata.values()}
    stacked, notes = _assemble_s2(s2, substitute, where)
    bands, valid = _s2_validity(stacked, nodata_vals.pop() if len(nodata_vals) == 1 else None)
    masks = valid if mask is None else (valid & (mask != 0))
    t, h, w = masks.shape
    if set(s1) == {"VV", "VH"}:
        vv = _s1_to_db(s1["VV"][0], s1_encoding, s1["VV"][1])
        vh = _s1_to_db(s1["VH"][0], s1_encoding, s1["VH"][1])
        sar = np.stack([encode_s1_db(vv), encode_s1_db(vh)], axis=-1)
        sar_doy = doys.astype(np.int16)
        notes.append(f"S1 from the datacube has no orbit direction: read as {s1_orbit}")
    elif not s1:
        sar = np.zeros((0, h, w, 2), dtype=np.int16)
        sar_doy = np.zeros((0,), dtype=np.int16)
        notes.append("no S1 in the datacube: S1 read as no observations")
    else:
        raise InvalidInputError(f"{where} has S1 {sorted(s1)} only; TESSERA needs both VV and VH")
    empty = np.zeros((0, h, w, 2), dtype=np.int16), np.zeros((0,), dtype=np.int16)
    asc, desc = ((sar, sar_doy), empty) if s1_orbit == "ascending" else (empty, (sar, sar_doy))
    if crs_text is None:
        raise InvalidInputError(f"{where} carries no CRS (a 'crs' or 'spatial_ref' variable with crs_wkt)")
    epsg = epsg_from_crs(crs_text, where)
    ys_sorted = ys[::-1] if flip_y else ys
    xs_sorted = xs[::-1] if flip_x else xs
    if len(xs_sorted) < 2 or len(ys_sorted) < 2:
        raise InvalidInputError(f"{where}: needs at least 2 x 2 pixels to know its pixel size")
    a = float(np.median(np.diff(xs_sorted)))
    e = float(np.median(np.diff(ys_sorted)))
    transform = (a, 0.0, float(xs_sorted[0] - a / 2.0), 0.0, e, float(ys_sorted[0] - e / 2.0))
    grid = grid_for(epsg, transform, h, w)
    tile = TileInputs(
        bands=bands, masks=masks.astype(np.uint8), doys=doys.astype(np.int32),
        sar_asc=asc[0], sar_asc_doy=asc[1], sar_desc=desc[0], sar_desc_doy=desc[1],
        name=path.stem, grid=grid, year=_year_of(dates), notes=notes,
    )
    tile.validate()
    return tile


_TIF_RE = re.compile(r"(?P<date>\d{8})T\d{6}.*_(?P<band>B\d[\dA]|MASK|SCL|VV|VH)\.tiff?$", re.IGNORECASE)


def load_geotiff_stack(
    path: str | os.PathLike[str],
    substitute: dict[str, str] | None = None,
    s1_encoding: str = "auto",
) -> TileInputs:
    """Read per-acquisition GeoTIFFs ``<...>_<yyyymmdd>T<hhmmss>..._<BAND>.tif`` in a directory.

    Every band of every date is resampled (nearest) onto the finest-resolution band's grid.
    ``MASK`` (non-zero = usable) or ``SCL`` give the cloud mask; ``VV``/``VH`` files, if any,
    are S1 (read as ascending, encoded per ``s1_encoding`` as in :func:`load_datacube`).
    """
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.warp import Resampling, reproject

    path = Path(path)
    files: dict[str, dict[str, Path]] = {}
    for f in sorted(path.iterdir()):
        m = _TIF_RE.search(f.name)
        if m:
            band = m.group("band").upper()
            files.setdefault(m.group("date"), {})[_norm_band(band) if band.startswith("B") else band] = f
    if not files:
        raise InvalidInputError(f"{path} holds no per-date GeoTIFFs named ..._<yyyymmdd>T<hhmmss>..._<BAND>.tif")
    # Reference grid: the finest band over all files.
    ref = None
    try:
        for bands in files.values():
            for f in bands.values():
                with rasterio.open(f) as src:
                    if ref is None or src.res[0] < ref[2][0]:
                        ref = (src.crs, src.transform, src.res, src.height, src.width)
    except RasterioIOError as exc:
        raise InvalidInputError(f"{path}: unreadable GeoTIFF: {exc}") from exc
    crs, transform, _, h, w = ref

    def read(f: Path) -> tuple[np.ndarray, float | None]:
        try:
            with rasterio.open(f) as src:
                nod = src.nodata
                if src.crs == crs and src.transform == transform and src.shape == (h, w):
                    return src.read(1), nod
                out = np.zeros((h, w), dtype=src.dtypes[0])
                if nod is not None:
                    out[...] = nod
                reproject(
                    rasterio.band(src, 1), out, dst_transform=transform, dst_crs=crs,
                    resampling=Resampling.nearest, src_nodata=nod, dst_nodata=nod,
                )
                return out, nod
        except RasterioIOError as exc:
            raise InvalidInputError(f"unreadable GeoTIFF {f}: {exc}") from exc

    dates = sorted(files)
    s2_per_date, masks_l, s1_vv, s1_vh, notes = [], [], [], [], []
    found_any: set[str] = set()
    substitute = dict(substitute or {})
    for d in dates:
        bands = files[d]
        found = {b: read(f)[0] for b, f in bands.items() if b in S2_BAND_ORDER}
        found_any |= set(found)
        stacked, n = _assemble_s2(found, substitute, f"acquisition {d} in {path.name}")
        notes.extend(x for x in n if x not in notes)
        s2_per_date.append(stacked)
        if "MASK" in bands:
            m, nod = read(bands["MASK"])
            masks_l.append((m != 0) & (m != (nod if nod is not None else -1)))
        elif "SCL" in bands:
            masks_l.append(scl_to_mask(read(bands["SCL"])[0]) != 0)
        else:
            masks_l.append(np.ones((h, w), dtype=bool))
        if "VV" in bands and "VH" in bands:
            s1_vv.append((d, read(bands["VV"])))
            s1_vh.append((d, read(bands["VH"])))
    s2 = np.stack(s2_per_date)
    bands_dn, valid = _s2_validity(s2, 0.0 if s2.dtype.kind == "u" else None)
    # DN 0 is the GeoTIFF no-data value for L2A; an all-zero observation is no data anyway.
    masks = (valid & np.stack(masks_l)).astype(np.uint8)
    date_objs = [_dt.date(int(d[:4]), int(d[4:6]), int(d[6:])) for d in dates]
    doys = np.array([x.timetuple().tm_yday for x in date_objs], dtype=np.int32)
    if s1_vv:
        vv = np.stack([_s1_to_db(a, s1_encoding, nod) for _, (a, nod) in s1_vv])
        vh = np.stack([_s1_to_db(a, s1_encoding, nod) for _, (a, nod) in s1_vh])
        sar = np.stack([encode_s1_db(vv), encode_s1_db(vh)], axis=-1)
        sar_doy = np.array([_dt.date(int(d[:4]), int(d[4:6]), int(d[6:])).timetuple().tm_yday for d, _ in s1_vv], dtype=np.int16)
        notes.append("S1 GeoTIFFs carry no orbit direction: read as ascending")
    else:
        sar = np.zeros((0, h, w, 2), dtype=np.int16)
        sar_doy = np.zeros((0,), dtype=np.int16)
        notes.append("no S1 GeoTIFFs: S1 read as no observations")
    grid = grid_for(epsg_from_crs(crs.to_wkt(), path.name), tuple(transform)[:6], h, w)
    tile = TileInputs(
        bands=bands_dn, masks=masks, doys=doys, sar_asc=sar, sar_asc_doy=sar_doy,
        sar_desc=np.zeros((0, h, w, 2), dtype=np.int16), sar_desc_doy=np.zeros((0,), dtype=np.int16),
        name=path.name, grid=grid, year=_year_of(date_objs), notes=notes,
    )
    tile.validate()
    return tile


def load_input(path: str | os.PathLike[str], substitute: dict[str, str] | None = None, s1_encoding: str = "auto") -> TileInputs:
    """Dispatch on the input form: tile directory, per-date GeoTIFF directory, or datacube file."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"input {path} does not exist")
    if path.is_dir():
        if (path / "bands.npy").exists():
            if substitute:
                raise InvalidInputError("substitute_bands applies to datacubes and GeoTIFF stacks; an official tile has all bands")
            return load_tile_dir(path)
        if any(p.suffix.lower() in (".tif", ".tiff") for p in path.iterdir()):
            return load_geotiff_stack(path, substitute, s1_encoding)
        if path.suffix == ".zarr":
            return load_datacube(path, substitute, s1_encoding)
        raise InvalidInputError(f"{path}: neither an official tile directory (bands.npy) nor per-date GeoTIFFs")
    return load_datacube(path, substitute, s1_encoding)
