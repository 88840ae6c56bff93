"""Reading a raster to paint: bands decimated to a size (GDAL uses the file's overviews),
with the :class:`~tessera_search.quicklook.Extent` of what was read."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .quicklook import Extent

__all__ = ["RasterView", "read_raster"]


@dataclass
class RasterView:
    """Bands of a raster read decimated: ``data`` (bands, H, W) in the file's dtype, the
    ``extent`` of that array, the file's ``nodata``, ``tags`` and band ``descriptions``."""

    data: np.ndarray
    extent: Extent
    nodata: float | int | None
    tags: dict[str, str]
    descriptions: tuple[str | None, ...]

    @property
    def synthetic(self) -> bool:
        """Whether the file says it holds synthetic data (its ``synthetic`` tag)."""
        return str(self.tags.get("synthetic", "")).lower() == "true"

    def empty(self) -> np.ndarray:
        """(H, W) bool: pixels where every band read is nodata (or NaN)."""
        d = self.data
        if np.issubdtype(d.dtype, np.floating):
            bad = np.isnan(d)
            if self.nodata is not None and not math.isnan(float(self.nodata)):
                bad |= d == self.nodata
            return bad.all(axis=0)
        if self.nodata is None:
            return np.zeros(d.shape[1:], bool)
        return np.all(d == self.nodata, axis=0)


def read_raster(path: str | os.PathLike[str], bands: int | Sequence[int] = 1, *, max_size: int = 1024,
                resampling: str = "nearest") -> RasterView:
    """Read ``bands`` of a raster at no more than ``max_size`` pixels a side (GDAL uses the
    file's overviews), with the extent of what was read; ``resampling``: a GDAL method
    ("nearest" for codes, "average" for values)."""
    import rasterio
    from rasterio.enums import Resampling

    bands = [bands] if isinstance(bands, int) else list(bands)
    with rasterio.open(path) as src:
        f = max(src.width / max_size, src.height / max_size, 1.0)
        w, h = max(1, int(round(src.width / f))), max(1, int(round(src.height / f)))
        method = Resampling[resampling] if f > 1 else Resampling.nearest
        data = src.read(bands, out_shape=(len(bands), h, w), resampling=method)
        t = src.transform
        if src.crs is None:
            raise ValueError(f"{path} has no CRS: a quicklook needs to know where its pixels are")
        extent = Extent(src.crs.to_wkt(), (t.a * src.width / w, 0.0, t.c, 0.0, t.e * src.height / h, t.f))
        return RasterView(data, extent, src.nodata, dict(src.tags()), tuple(src.descriptions))
