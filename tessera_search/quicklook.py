"""PNG quicklooks: the one painter behind every picture the library draws.

A quicklook is a **base layer** placed on the map by an :class:`Extent`, **marker layers**
on top, and the furniture that makes it readable on its own: a legend box (what each
colour and marker means) or a colour bar, a scale bar, lon/lat ticks on the frame, a title,
and a ``SYNTHETIC DATA`` badge on pictures of synthetic data. Base layers:

- :class:`RGBLayer`: an (H, W, 3) uint8 picture (a false-colour view of embeddings);
- :class:`ValueLayer`: (H, W) floats drawn along a colour ramp, with a colour bar;
- :class:`ClassLayer`: (H, W) class codes drawn with a palette, with a legend.

Markers are lon/lat points with a symbol, a colour and a legend label
(:meth:`Markers.matches`, :meth:`Markers.positives`, :meth:`Markers.negatives`,
:meth:`Markers.places` are the house styles). Example: matches over a false-colour view::

    from tessera_search.quicklook import Extent, Markers, RGBLayer, paint

    extent = Extent("EPSG:32737", (10.0, 0.0, 254700.0, 0.0, -10.0, 9861930.0))
    paint("matches.png", RGBLayer(rgb, mask=valid, label="embeddings (PCA false colour)"), extent,
          markers=[Markers.matches(lon, lat), Markers.positives(plon, plat), Markers.negatives(nlon, nlat)],
          title="40 matches in kenya (2023)", synthetic=True)

The picture is bounded: a base layer larger than ``max_size`` pixels a side is decimated
(nearest) to fit, a small one is enlarged by whole pixels; a marker layer of more than
``max_markers`` points is painted as 3 x 3 pixel blocks instead of symbols. Files are
written atomically. :func:`read_raster` reads a GeoTIFF decimated (from its overviews) to
feed the painter. Only north-up extents are supported (no rotation terms).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "PALETTE",
    "RAMP_CHANGE",
    "RAMP_GREY",
    "SYNTHETIC_COLOUR",
    "ClassLayer",
    "Extent",
    "Markers",
    "Picture",
    "RGBLayer",
    "ValueLayer",
    "class_colour",
    "nice_length",
    "paint",
    "render",
]

RGB = tuple[int, int, int]

PALETTE: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)
"""Distinct colours for class codes 1, 2, ... (cycled beyond 20)."""

RAMP_CHANGE: tuple[tuple[float, RGB], ...] = (
    (0.0, (24, 26, 56)), (0.3, (84, 40, 128)), (0.55, (186, 54, 104)), (0.8, (240, 120, 52)), (1.0, (252, 234, 90)),
)
"""Dark (low) to yellow (high): ``(position in [0, 1], RGB)`` stops."""

RAMP_GREY: tuple[tuple[float, RGB], ...] = ((0.0, (40, 40, 40)), (1.0, (240, 240, 240)))
"""Dark grey to light grey (white stays for no data)."""

SYNTHETIC_COLOUR: RGB = (214, 0, 110)
"""The fill of the ``SYNTHETIC DATA`` badge."""

_WHITE: RGB = (255, 255, 255)
_BLACK: RGB = (0, 0, 0)
_PAD = 10
_TICK = 5
_SWATCH = 14
_MAX_NUMBERS = 50  # numbered markers: only the first 50 get their rank written


def class_colour(code: int, colours: Mapping[int, RGB] | None = None) -> RGB:
    """The colour of class ``code``: ``colours[code]``, else :data:`PALETTE` cycled from code 1."""
    if colours and int(code) in colours:
        return tuple(int(v) for v in colours[int(code)][:3])
    return PALETTE[(int(code) - 1) % len(PALETTE)]


# ======================================================================================
# What is painted
# ======================================================================================


@dataclass(frozen=True)
class Extent:
    """Where a base layer's pixels lie: its CRS and the north-up affine transform
    ``(a, b, c, d, e, f)`` (GDAL order: x = c + a * col, y = f + e * row) of its array."""

    crs: str
    transform: tuple[float, float, float, float, float, float]

    def __post_init__(self) -> None:
        t = tuple(float(v) for v in self.transform)[:6]
        if len(t) != 6 or t[1] != 0.0 or t[3] != 0.0 or t[0] <= 0 or t[4] >= 0:
            raise ValueError(f"a quicklook extent must be north-up (a > 0, b = d = 0, e < 0), got {self.transform}")
        object.__setattr__(self, "transform", t)
        object.__setattr__(self, "crs", str(self.crs))

    @classmethod
    def from_bounds(cls, west: float, south: float, east: float, north: float, width: int, height: int,
                    crs: str = "EPSG:4326") -> Extent:
        """The extent of a (height, width) array covering ``west, south, east, north`` (CRS units)."""
        return cls(crs, ((east - west) / width, 0.0, west, 0.0, -(north - south) / height, north))


@dataclass(frozen=True)
class RGBLayer:
    """A picture: (H, W, 3) uint8 ``rgb``; ``mask`` (H, W) bool, True where there is data
    (elsewhere white, "no data" in the legend); ``label``: its legend entry (none if empty)."""

    rgb: np.ndarray
    mask: np.ndarray | None = None
    label: str = ""


@dataclass(frozen=True)
class ValueLayer:
    """(H, W) float ``values`` along ``ramp`` from ``vmin`` to ``vmax`` (clipped), NaN no data
    (white). The legend shows a colour bar captioned ``label``; ``open_top`` labels its top
    ``>= vmax`` (values above take the top colour)."""

    values: np.ndarray
    vmin: float = 0.0
    vmax: float = 1.0
    ramp: Sequence[tuple[float, RGB]] = RAMP_CHANGE
    label: str = ""
    open_top: bool = True


@dataclass(frozen=True)
class ClassLayer:
    """(H, W) integer class ``codes`` drawn with ``colours`` (default :data:`PALETTE`); the
    legend lists ``legend`` ``{code: name}``. Codes not in the legend (and ``nodata``) are white."""

    codes: np.ndarray
    legend: Mapping[int, str]
    colours: Mapping[int, RGB] | None = None
    nodata: int | None = 0


@dataclass(frozen=True)
class Markers:
    """Points (lon/lat degrees, best first) drawn as ``symbol`` ("dot", "plus", "cross" or
    "ring") in ``colour``, listed in the legend as ``label`` with their count. ``numbered``
    writes the rank (1, 2, ...) beside the first 50."""

    lon: np.ndarray
    lat: np.ndarray
    label: str
    symbol: str = "dot"
    colour: RGB = (255, 215, 0)
    numbered: bool = False

    def __post_init__(self) -> None:
        lon = np.atleast_1d(np.asarray(self.lon, dtype=np.float64)).ravel()
        lat = np.atleast_1d(np.asarray(self.lat, dtype=np.float64)).ravel()
        if lon.shape != lat.shape:
            raise ValueError(f"markers {self.label!r}: {lon.size} longitudes for {lat.size} latitudes")
        if self.symbol not in _SYMBOLS:
            raise ValueError(f"markers {self.label!r}: symbol {self.symbol!r} is not one of {', '.join(_SYMBOLS)}")
        object.__setattr__(self, "lon", lon)
        object.__setattr__(self, "lat", lat)

    @classmethod
    def matches(cls, lon, lat, label: str = "match") -> Markers:
        """Yellow dots ringed in black."""
        return cls(lon, lat, label, "dot", (255, 215, 0))

    @classmethod
    def positives(cls, lon, lat, label: str = "example (positive)") -> Markers:
        """Cyan + in a black ring."""
        return cls(lon, lat, label, "plus", (0, 200, 255))

    @classmethod
    def negatives(cls, lon, lat, label: str = "example (negative)") -> Markers:
        """Red x in a black ring."""
        return cls(lon, lat, label, "cross", (220, 0, 0))

    @classmethod
    def places(cls, lon, lat, label: str = "place (rank)") -> Markers:
        """Black-and-white rings with their rank."""
        return cls(lon, lat, label, "ring", _WHITE, numbered=True)


@dataclass
class Picture:
    """A rendered quicklook: the image and where its parts are, as ``(x0, y0, x1, y1)`` pixel
    boxes (inclusive) under the names "map", "title", "legend", "scale_bar", "synthetic",
    "lon_ticks", "lat_ticks" (only those drawn); ``ticks`` lists ``(axis, value, x, y)``."""

    image: object  # PIL.Image.Image
    boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    ticks: list[tuple[str, float, int, int]] = field(default_factory=list)


# ======================================================================================
# Painting
# ======================================================================================


def nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 x 10^n not above ``metres`` (0 for none); a scale bar's length."""
    if not (metres > 0 and math.isfinite(metres)):
        return 0.0
    p = 10.0 ** math.floor(math.log10(metres))
    for m in (5.0, 2.0, 1.0):
        if m * p <= metres:
            return m * p
    return p


def _nice_step(span: float, want: int = 5) -> float:
    """A 1, 2, 2.5 or 5 x 10^n step giving about ``want`` ticks over ``span``."""
    raw = span / max(want, 1)
    p = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * p >= raw:
            return m * p
    return 10.0 * p


def _ramp_colours(t: np.ndarray, ramp: Sequence[tuple[float, RGB]]) -> np.ndarray:
    """(..., 3) uint8 colours of ``t`` in [0, 1] (clipped) along ``ramp`` stops."""
    pos = np.array([p for p, _ in ramp], dtype=np.float64)
    cols = np.array([c for _, c in ramp], dtype=np.float64)
    v = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    return np.stack([np.interp(v, pos, cols[:, i]) for i in range(3)], axis=-1).round().astype(np.uint8)


def _layer_pixels(base) -> tuple[np.ndarray, np.ndarray]:
    """((H, W, 3) uint8 colours, (H, W) bool no-data) of a base layer."""
    if isinstance(base, RGBLayer):
        rgb = np.asarray(base.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"an RGB layer is (H, W, 3), got {rgb.shape}")
        empty = np.zeros(rgb.shape[:2], bool) if base.mask is None else ~np.asarray(base.mask, bool)
        out = rgb.astype(np.uint8, copy=True)
        out[empty] = _WHITE
        return out, empty
    if isinstance(base, ValueLayer):
        v = np.asarray(base.values)
        if v.ndim != 2:
            raise ValueError(f"a value layer is (H, W), got {v.shape}")
        empty = ~np.isfinite(v)
        span = base.vmax - base.vmin
        out = np.full((*v.shape, 3), 255, np.uint8)
        out[~empty] = _ramp_colours((v[~empty].astype(np.float64) - base.vmin) / (span if span > 0 else 1.0),
                                    base.ramp)
        return out, empty
    if isinstance(base, ClassLayer):
        c = np.asarray(base.codes)
        if c.ndim != 2:
            raise ValueError(f"a class layer is (H, W), got {c.shape}")
        out = np.full((*c.shape, 3), 255, np.uint8)
        known = np.zeros(c.shape, bool)
        for code in base.legend:
            sel = c == code
            out[sel] = class_colour(code, base.colours)
            known |= sel
        if base.nodata is not None:
            known &= c != base.nodata
        return out, ~known
    raise TypeError(f"a quicklook base layer is an RGBLayer, ValueLayer or ClassLayer, not {type(base).__name__}")


def _fit(arr: np.ndarray, max_size: int) -> np.ndarray:
    """``arr`` (H, W, ...) decimated (nearest) to at most ``max_size`` a side, or enlarged
    by whole pixels when smaller than half of it (square pixels either way)."""
    h, w = arr.shape[:2]
    f = max(h / max_size, w / max_size)
    if f > 1.0:
        nh, nw = max(1, int(round(h / f))), max(1, int(round(w / f)))
        rows = np.minimum(((np.arange(nh) + 0.5) * h / nh).astype(np.int64), h - 1)
        cols = np.minimum(((np.arange(nw) + 0.5) * w / nw).astype(np.int64), w - 1)
        return arr[rows][:, cols]
    up = max(1, (max_size // 2) // max(h, w, 1))
    if up > 1:
        return np.repeat(np.repeat(arr, up, axis=0), up, axis=1)
    return arr


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    x0, y0, x1, y1 = font.getbbox(text)
    return int(math.ceil(x1 - min(x0, 0))), int(math.ceil(y1 - min(y0, 0)))


def _degrees(value: float, step: float, axis: str) -> str:
    digits = max(0, -int(math.floor(math.log10(step) + 1e-9)))
    if abs(step * 10**digits - round(step * 10**digits)) > 1e-6:  # 2.5 x 10^n needs one more
        digits += 1
    v = round(value, digits)
    if v == 0:
        return "0°"
    hemi = ("E" if v > 0 else "W") if axis == "lon" else ("N" if v > 0 else "S")
    return f"{abs(v):.{digits}f}°{hemi}"


def _edge_ticks(values: np.ndarray, positions: np.ndarray, axis: str, want: int) -> list[tuple[float, float, str]]:
    """(value, position, label) of nice degree ticks along one frame edge, or none when the
    coordinate is not monotonic along it (a pole or the antimeridian in the frame)."""
    ok = np.isfinite(values)
    values, positions = values[ok], positions[ok]
    if values.size < 2:
        return []
    d = np.diff(values)
    if np.all(d < 0):
        values, positions = values[::-1], positions[::-1]
    elif not np.all(d > 0):
        return []
    lo, hi = float(values[0]), float(values[-1])
    step = _nice_step(hi - lo, want)
    out = []
    for k in range(int(math.ceil(lo / step - 1e-9)), int(math.floor(hi / step + 1e-9)) + 1):
        v = k * step
        out.append((v, float(np.interp(v, values, positions)), _degrees(v, step, axis)))
    return sorted(out, key=lambda t: t[1])  # by position along the edge


def _draw_symbol(draw, symbol: str, x: float, y: float, colour: RGB) -> None:
    if symbol == "dot":
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour, outline=_BLACK)
    elif symbol == "ring":
        draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=_BLACK, width=4)
        draw.ellipse([x - 5, y - 5, x + 5, y + 5], outline=colour, width=2)
    else:
        draw.ellipse([x - 11, y - 11, x + 11, y + 11], outline=_BLACK, width=2)
        if symbol == "plus":
            draw.line([x - 9, y, x + 9, y], fill=colour, width=3)
            draw.line([x, y - 9, x, y + 9], fill=colour, width=3)
        else:
            draw.line([x - 8, y - 8, x + 8, y + 8], fill=colour, width=3)
            draw.line([x - 8, y + 8, x + 8, y - 8], fill=colour, width=3)


_SYMBOLS = ("dot", "plus", "cross", "ring")


def render(
    base,
    extent: Extent,
    *,
    markers: Sequence[Markers] = (),
    title: str = "",
    synthetic: bool = False,
    max_size: int = 1024,
    max_markers: int = 5000,
    legend: bool = True,
    scale_bar: bool = True,
    ticks: bool = True,
) -> Picture:
    """Draw a quicklook in memory (see the module docstring); :func:`paint` writes it.

    ``base``: an :class:`RGBLayer`, :class:`ValueLayer` or :class:`ClassLayer` whose array
    ``extent`` places. ``markers``: layers drawn in order, each best point on top.
    ``synthetic``: draw the ``SYNTHETIC DATA`` badge. The map is at most ``max_size``
    pixels a side; the legend, ticks and scale bar sit around it.
    """
    from PIL import Image, ImageDraw
    from pyproj import Transformer

    from .geodesy import ground_distance

    if max_size < 16:
        raise ValueError(f"max_size must be at least 16 pixels, got {max_size}")
    colours, empty = _layer_pixels(base)
    h0, w0 = empty.shape
    if h0 == 0 or w0 == 0:
        raise ValueError("a quicklook needs a base layer with at least one pixel")
    img = _fit(colours, max_size)
    h, w = img.shape[:2]
    has_nodata = bool(empty.any())
    sx, sy = w / w0, h / h0  # picture pixels per array pixel
    a, _, c, _, e, f = extent.transform
    to_map = Transformer.from_crs("EPSG:4326", extent.crs, always_xy=True)
    to_lonlat = Transformer.from_crs(extent.crs, "EPSG:4326", always_xy=True)

    def to_pixel(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = to_map.transform(lon, lat)
        return (np.asarray(x) - c) / a * sx, (np.asarray(y) - f) / e * sy

    # Marker positions, and the crowded layers painted into the map as 3 x 3 blocks.
    drawn: list[tuple[Markers, np.ndarray, np.ndarray, np.ndarray]] = []
    for m in markers:
        if m.lon.size == 0:
            drawn.append((m, np.empty(0), np.empty(0), np.empty(0, np.int64)))
            continue
        px, py = to_pixel(m.lon, m.lat)
        inside = np.isfinite(px) & np.isfinite(py) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
        idx = np.flatnonzero(inside)
        if idx.size > max_markers:
            cc, rr = np.floor(px[idx]).astype(np.int64), np.floor(py[idx]).astype(np.int64)
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    img[np.clip(rr + dr, 0, h - 1), np.clip(cc + dc, 0, w - 1)] = m.colour
            idx = np.empty(0, np.int64)
        drawn.append((m, px, py, idx))

    font = _font()
    _, lh = _text_size(font, "0°NSEW")
    lh += 2

    # Ticks: lon along the bottom edge, lat along the left edge.
    lon_ticks: list[tuple[float, float, str]] = []
    lat_ticks: list[tuple[float, float, str]] = []
    if ticks:
        n = min(400, max(w, h)) + 1
        xs = np.linspace(0, w, n)
        ys = np.linspace(0, h, n)
        blon, _ = to_lonlat.transform(c + a * xs / sx, np.full(n, f + e * h / sy))
        _, llat = to_lonlat.transform(np.full(n, c), f + e * ys / sy)
        # about one labelled tick per 100 pixels across, 60 pixels down
        lon_ticks = _edge_ticks(np.asarray(blon, np.float64), xs, "lon", max(2, min(5, w // 100)))
        lat_ticks = _edge_ticks(np.asarray(llat, np.float64), ys, "lat", max(2, min(5, h // 60)))

    # Legend entries: (kind, payload, text).
    entries: list[tuple[str, object, str]] = []
    if legend:
        if isinstance(base, ClassLayer):
            for code, name in base.legend.items():
                entries.append(("swatch", class_colour(code, base.colours), str(name)))
        elif isinstance(base, RGBLayer) and base.label:
            entries.append(("rgb", None, base.label))
        for m, _, _, _ in drawn:
            entries.append(("marker", m, f"{m.label} ({m.lon.size})"))
        if has_nodata:
            entries.append(("swatch", _WHITE, "no data"))
    bar = legend and isinstance(base, ValueLayer)
    bar_h = 120
    bar_labels: list[str] = []
    if bar:
        mid = (base.vmin + base.vmax) / 2
        bar_labels = [(">= " if base.open_top else "") + f"{base.vmax:.3g}", f"{mid:.3g}", f"{base.vmin:.3g}"]

    # Layout.
    lat_w = max((_text_size(font, t)[0] for _, _, t in lat_ticks), default=0)
    left = _PAD + (lat_w + _TICK + 3 if lat_ticks else 0)
    title_w, _ = _text_size(font, title) if title else (0, 0)
    top = _PAD + (lh + 6 if title else 0)
    row_h = max(_SWATCH + 6, lh + 4, 24 if any(k == "marker" and p.symbol in ("plus", "cross")
                                               for k, p, _ in entries) else 0)
    text_ws = [_text_size(font, t)[0] for _, _, t in entries]
    if bar:
        text_ws += [_text_size(font, base.label)[0] if base.label else 0]
        text_ws += [_SWATCH + 8 + _text_size(font, t)[0] for t in bar_labels]
    panel_w = (8 + 24 + 6 + max(text_ws) + 8) if (entries or bar) else 0
    panel_h = 0
    if entries or bar:
        panel_h = 8 + (lh + 4 if bar and base.label else 0) + (bar_h + 10 if bar else 0) + row_h * len(entries) + 4
    below = (_TICK + lh + 4 if lon_ticks else 4) + (22 if scale_bar else 0)
    width = max(left + w + (_PAD + panel_w if panel_w else 0) + _PAD, _PAD * 2 + title_w)
    height = max(top + h + below + _PAD, top + panel_h + _PAD)
    canvas = Image.new("RGB", (int(width), int(height)), _WHITE)
    canvas.paste(Image.fromarray(np.ascontiguousarray(img)), (left, top))
    draw = ImageDraw.Draw(canvas)
    pic = Picture(canvas)
    pic.boxes["map"] = (left, top, left + w - 1, top + h - 1)
    draw.rectangle([left - 1, top - 1, left + w, top + h], outline=_BLACK)
    if title:
        draw.text((_PAD, _PAD), title, fill=_BLACK, font=font)
        pic.boxes["title"] = (_PAD, _PAD, _PAD + title_w, _PAD + lh)

    # Markers: best drawn last, on top; ranks beside the first 50 of numbered layers.
    for m, px, py, idx in drawn:
        for i in idx[::-1]:
            _draw_symbol(draw, m.symbol, left + px[i], top + py[i], m.colour)
        if m.numbered:
            for i in idx[idx < _MAX_NUMBERS]:
                draw.text((left + px[i] + 7, top + py[i] - 7), str(i + 1), fill=_WHITE, font=font,
                          stroke_width=2, stroke_fill=_BLACK)

    # Ticks and their labels (a label that would overlap the previous one is skipped).
    last = -1e9
    for v, x, text in lon_ticks:
        xx = int(round(left + min(x, w - 1)))
        draw.line([xx, top + h, xx, top + h + _TICK], fill=_BLACK)
        tw, _ = _text_size(font, text)
        x0 = min(max(xx - tw / 2, 0), width - tw)
        if x0 > last + 6:
            draw.text((x0, top + h + _TICK + 2), text, fill=_BLACK, font=font)
            last = x0 + tw
        pic.ticks.append(("lon", v, xx, top + h))
    if lon_ticks:
        pic.boxes["lon_ticks"] = (left, top + h + 1, left + w, top + h + _TICK + lh + 2)
    last = -1e9
    for v, y, text in lat_ticks:
        yy = int(round(top + min(y, h - 1)))
        draw.line([left - 1 - _TICK, yy, left - 1, yy], fill=_BLACK)
        tw, th = _text_size(font, text)
        y0 = yy - th / 2
        if y0 > last + 2:
            draw.text((left - 2 - _TICK - tw - 2, y0), text, fill=_BLACK, font=font)
            last = y0 + th
        pic.ticks.append(("lat", v, left - 1, yy))
    if lat_ticks:
        pic.boxes["lat_ticks"] = (_PAD, top, left - 2, top + h)

    # Scale bar: the ground length of one picture pixel at the map's centre.
    if scale_bar:
        cx, cy = c + a * (w / 2) / sx, f + e * (h / 2) / sy
        lon2, lat2 = to_lonlat.transform([cx, cx + a / sx], [cy, cy])
        metres_px = float(ground_distance(lon2[0], lat2[0], lon2[1], lat2[1]))
        length = nice_length(metres_px * w / 4)
        if length > 0:
            n_px = max(2, int(round(length / metres_px)))
            y0 = top + h + below - 18
            half = n_px // 2
            draw.rectangle([left, y0, left + half, y0 + 5], fill=_BLACK, outline=_BLACK)
            draw.rectangle([left + half, y0, left + n_px, y0 + 5], fill=_WHITE, outline=_BLACK)
            label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
            tw, _ = _text_size(font, label)
            draw.text((left + n_px + 6, y0 - 3), label, fill=_BLACK, font=font)
            pic.boxes["scale_bar"] = (left, y0, left + n_px + 6 + tw, y0 + 5)

    # Legend box: colour bar, then one row per class / picture / marker layer / no data.
    if panel_w:
        x0, y = left + w + _PAD, top
        draw.rectangle([x0, y, x0 + panel_w, y + panel_h], outline=_BLACK)
        pic.boxes["legend"] = (x0, y, x0 + panel_w, y + panel_h)
        y += 8
        sx0 = x0 + 8 + (24 - _SWATCH) // 2
        if bar:
            if base.label:
                draw.text((x0 + 8, y), base.label, fill=_BLACK, font=font)
                y += lh + 4
            ramp = _ramp_colours(np.linspace(1.0, 0.0, bar_h), base.ramp)
            canvas.paste(Image.fromarray(np.repeat(ramp[:, None], _SWATCH, axis=1)), (sx0, y))
            draw.rectangle([sx0 - 1, y - 1, sx0 + _SWATCH, y + bar_h], outline=_BLACK)
            for frac, text in zip((0.0, 0.5, 1.0), bar_labels, strict=True):
                ty = y + int(round(frac * (bar_h - 1)))
                draw.line([sx0 + _SWATCH, ty, sx0 + _SWATCH + 3, ty], fill=_BLACK)
                _, th = _text_size(font, text)
                draw.text((sx0 + _SWATCH + 6, ty - th / 2), text, fill=_BLACK, font=font)
            pic.boxes["colour_bar"] = (sx0, y, sx0 + _SWATCH - 1, y + bar_h - 1)
            y += bar_h + 10
        for kind, payload, text in entries:
            cy = y + row_h // 2
            if kind == "swatch":
                draw.rectangle([sx0, cy - _SWATCH // 2, sx0 + _SWATCH, cy + _SWATCH // 2], fill=payload, outline=_BLACK)
            elif kind == "rgb":
                third = _SWATCH // 3
                for k, col in enumerate(((200, 60, 60), (60, 170, 60), (60, 90, 200))):
                    draw.rectangle([sx0 + k * third, cy - _SWATCH // 2, sx0 + (k + 1) * third, cy + _SWATCH // 2],
                                   fill=col)
                draw.rectangle([sx0, cy - _SWATCH // 2, sx0 + _SWATCH, cy + _SWATCH // 2], outline=_BLACK)
            else:
                _draw_symbol(draw, payload.symbol, x0 + 8 + 12, cy, payload.colour)
            _, th = _text_size(font, text)
            draw.text((x0 + 8 + 24 + 6, cy - th / 2 - 1), text, fill=_BLACK, font=font)
            y += row_h

    # The SYNTHETIC badge, inside the map's top-left corner.
    if synthetic:
        text = "SYNTHETIC DATA"
        big = _font(16)
        tw, th = _text_size(big, text)
        bx, by = left + 4, top + 4
        draw.rectangle([bx, by, bx + tw + 8, by + th + 6], fill=SYNTHETIC_COLOUR, outline=_WHITE)
        draw.text((bx + 4, by + 2), text, fill=_WHITE, font=big)
        pic.boxes["synthetic"] = (bx, by, bx + tw + 8, by + th + 6)
    return pic


def paint(path: str | os.PathLike[str], base, extent: Extent, **kwargs) -> Path:
    """:func:`render` a quicklook and write it as a PNG at ``path`` atomically; returns the path.

    Keyword arguments are :func:`render`'s (``markers``, ``title``, ``synthetic``,
    ``max_size``, ``max_markers``, ``legend``, ``scale_bar``, ``ticks``).
    """
    from ._io import atomic_path

    pic = render(base, extent, **kwargs)
    path = Path(path)
    with atomic_path(path, "the quicklook") as tmp:
        pic.image.save(tmp, format="PNG")
    return path
