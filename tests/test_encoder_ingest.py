"""Encoder output is a release like any other: the real WorldCereal patch and the Tanzania
per-date tiles encode to release-layout tiles that `download --source DIR` ingests and
`build-index` indexes, and a query finds the query pixel itself first."""

from __future__ import annotations

from pathlib import Path

from _helpers import SHARED

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xarray")

from tessera_search.encoder.config import get_config  # noqa: E402
from tessera_search.encoder.infer import encode  # noqa: E402
from tessera_search.grid import Tile, owned_mask, pixel_to_lonlat  # noqa: E402
from tessera_search.ingest import download  # noqa: E402
from tessera_search.store import TileStore  # noqa: E402

DATA = SHARED / Path("data/worldcereal")
TINY = get_config("v1.0", d_model=32, n_heads=2, n_layers=1, dim_feedforward=64)



@pytest.mark.skipif(not DATA.exists(), reason="shared real data not available")
@pytest.mark.parametrize("inputs", ["s2_tanzania_36MXB", "belgium_patch_2020-2021.nc"])
def test_real_inputs_encode_ingest_index_and_query(tmp_path, inputs):
    from tessera_search.index import build_index, open_index
    from tessera_search.query import point_query, search_index

    out, home = tmp_path / "enc", tmp_path / "ws"
    res = encode(DATA / inputs, out, config=TINY, substitute={"B8A": "B08"}, device="cpu")
    assert res.ingestible
    tile = Tile.from_name(res.tile)
    rep = download([tile], res.year, source=out, home=home, progress=False)
    assert [t.name for t in rep.stored] == [res.tile] and not rep.failed
    stored = TileStore(home).read(tile, res.year)
    assert stored.valid.sum() > 0 and stored.dataset_version == res.version
    build_index(tiles=[res.tile], year=res.year, home=home, name="enc", progress=False)
    with open_index("enc", home=home) as idx:
        assert idx.n_vectors > 0
        r, c = np.argwhere(stored.valid & owned_mask(stored.grid))[0]
        lon, lat = pixel_to_lonlat(stored.grid, r, c)
        q = search_index(idx, point_query(idx, (float(lon), float(lat))), k=min(5, idx.n_vectors), record=False)
    assert (q.tiles[0], int(q.rows[0]), int(q.cols[0])) == (res.tile, int(r), int(c)) or q.similarity[0] > 0.99999
    assert q.similarity[0] == pytest.approx(1.0, abs=1e-5)
