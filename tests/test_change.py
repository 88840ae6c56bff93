"""Change between years: exact distances, georeferenced COGs, thinned top places, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from _helpers import small_grid, small_tile, write_mirror

from tessera_search.change import _Histogram, change_map, cosine_distance, parse_years
from tessera_search.errors import InvalidInputError, NoDataError, TileNotFoundError
from tessera_search.grid import Tile, TileGrid, lonlat_to_pixel, pixel_to_lonlat
from tessera_search.quant import valid_scales
from tessera_search.regions import resolve_region
from tessera_search.sources.base import TileData
from tessera_search.sources.synthetic import WATER_CLASSES, generate_tile
from tessera_search.store import TileStore

A, B = 2020, 2024
T1, T2 = Tile.from_name("grid_36.75_-1.35"), Tile.from_name("grid_36.85_-1.35")  # both EPSG:32737
WEST, EAST = Tile.from_name("grid_35.95_-1.25"), Tile.from_name("grid_36.05_-1.25")  # zones 36 and 37


def _later(data: TileData, year: int, seed: int, grid: TileGrid | None = None) -> TileData:
    """Year ``year`` of ``data``: mostly small int8 noise, a few patches replaced, new scales."""
    rng = np.random.default_rng(seed)
    q = data.embeddings.astype(np.int16) + rng.integers(-6, 7, data.embeddings.shape)
    h, w = data.grid.shape
    for _ in range(6):
        r, c = rng.integers(0, h - 6), rng.integers(3, w - 6)
        q[r:r + 6, c:c + 6] = rng.integers(-127, 128, (6, 6, q.shape[-1]))
    scales = data.scales * np.float32(0.6)  # scales differ between years and must cancel
    return TileData(data.tile, year, np.clip(q, -127, 127).astype(np.int8), scales,
                    grid or data.grid, "v1", "test", False)


def _store_pair(home, tiles=(T1,), seed=0) -> dict:
    store = TileStore(home)
    out = {}
    for i, t in enumerate(tiles):
        a = small_tile(t, A, seed=seed)
        b = _later(a, B, seed + 10 + i)
        store.write(a)
        store.write(b)
        out[t] = (a, b)
    return out


def _reference(a: TileData, b: TileData) -> np.ndarray:
    """float64 cosine distance of the dequantized vectors; NaN where either is invalid."""
    va = a.embeddings.astype(np.float64) * np.where(np.isfinite(a.scales), a.scales, 0)[..., None]
    vb = b.embeddings.astype(np.float64) * np.where(np.isfinite(b.scales), b.scales, 0)[..., None]
    with np.errstate(invalid="ignore", over="ignore"):
        cos = np.sum(va * vb, -1) / (np.linalg.norm(va, axis=-1) * np.linalg.norm(vb, axis=-1))
    d = 1.0 - cos
    d[~(valid_scales(a.scales) & valid_scales(b.scales))] = np.nan
    return d


def _metres(lon0, lat0, lon1, lat1):
    """Haversine (spherical) metres: an independent check of separations."""
    p0, p1 = np.radians(lat0), np.radians(lat1)
    h = np.sin((p1 - p0) / 2) ** 2 + np.cos(p0) * np.cos(p1) * np.sin(np.radians(lon1 - lon0) / 2) ** 2
    return 2 * 6_371_008.8 * np.arcsin(np.sqrt(h))


def _brute_greedy(lon, lat, dist, k, sep):
    """Greedy over every pixel, best first: the rule that top K is promised to follow."""
    order = np.argsort(-dist, kind="stable")
    chosen = []
    for i in order:
        if len(chosen) == k:
            break
        if all(_metres(lon[i], lat[i], lon[j], lat[j]) >= sep for j in chosen):
            chosen.append(i)
    return np.array(chosen)


# ---------------------------------------------------------------------------- distance


def test_cosine_distance_identical_orthogonal_opposite_zero():
    a = np.zeros((5, 128), dtype=np.int8)
    b = np.zeros((5, 128), dtype=np.int8)
    a[0] = b[0] = np.arange(128) - 64  # identical
    a[1, :64], b[1, 64:] = 100, -90  # orthogonal
    a[2], b[2] = 37, -37  # opposite
    a[3] = 5  # b is all zeros: no direction
    a[4], b[4] = 127, 126
    d = cosine_distance(a, b)
    assert d.dtype == np.float32
    assert d[0] == 0.0 and d[1] == 1.0 and d[2] == 2.0 and np.isnan(d[3]) and d[4] == 0.0
    rng = np.random.default_rng(3)
    x, y = rng.integers(-127, 128, (2, 500, 128)).astype(np.int8)
    ref = 1 - np.sum(x.astype(float) * y, 1) / (np.linalg.norm(x.astype(float), axis=1) * np.linalg.norm(y, axis=1))
    np.testing.assert_allclose(cosine_distance(x, y), ref, atol=1e-6)


@pytest.mark.parametrize("text", ["2020", "2020,2020", "a,b", "2020,2021,2022", "2020.5,2021", "1000,2020"])
def test_parse_years_rejects(text):
    with pytest.raises(InvalidInputError):
        parse_years(text)


def test_parse_years_accepts_pairs_in_either_order():
    assert parse_years(" 2024, 2020") == (2024, 2020)
    assert parse_years([2018, 2023]) == (2018, 2023)


def test_histogram_percentiles_match_exact_ones():
    v = np.random.default_rng(0).beta(2, 5, 100_000).astype(np.float32) * 1.3
    h = _Histogram()
    h.add(v[:40_000])
    h.add(np.concatenate([v[40_000:], [np.nan]]))
    s = h.stats()
    assert s.valid_pixels == v.size
    assert s.mean == pytest.approx(float(v.astype(np.float64).mean()), abs=1e-9)
    for q, got in ((50, s.p50), (95, s.p95), (99, s.p99)):
        assert abs(got - np.percentile(v, q)) <= 2e-4, q
    assert s.min == float(v.min()) and s.max == float(v.max())


# ---------------------------------------------------------------------------- maps


def test_change_map_values_grid_and_tags(home, tmp_path):
    store = TileStore(home)
    a = small_tile(T1, A)
    b = _later(a, B, 5)
    # Known pixels: identical (under another scale), orthogonal, and invalid in year B.
    emb_a, emb_b = a.embeddings.copy(), b.embeddings.copy()
    emb_b[10, 20] = emb_a[10, 20]
    emb_a[11, 20], emb_b[11, 20] = 0, 0
    emb_a[11, 20, :64], emb_b[11, 20, 64:] = 50, 70
    b.scales[12, 20] = np.nan
    a = TileData(a.tile, A, emb_a, a.scales, a.grid, "v1", "test", False)
    b = TileData(b.tile, B, emb_b, b.scales, b.grid, "v2", "test", False)
    store.write(a)
    store.write(b)
    out = tmp_path / "change.tif"
    res = change_map([T1], (A, B), out, home=home, progress=False)
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == a.grid.epsg == 32737
        assert tuple(src.transform)[:6] == a.grid.transform
        assert (src.height, src.width) == a.grid.shape
        assert src.dtypes == ("float32",) and math.isnan(src.nodata)
        tags = src.tags()
        d = src.read(1)
    assert d[10, 20] == 0.0 and d[11, 20] == 1.0 and np.isnan(d[12, 20])
    assert np.isnan(d[:, :3]).all() and np.isnan(d[0:4, 5]).all()  # river and bad scales
    ref = _reference(a, b)
    np.testing.assert_array_equal(np.isnan(d), np.isnan(ref))
    np.testing.assert_allclose(d[~np.isnan(d)], ref[~np.isnan(ref)], atol=1e-6)
    assert tags["years"] == "2020,2024" and tags["synthetic"] == "false"
    assert json.loads(tags["dataset_version"]) == {"2020": "v1", "2024": "v2"}
    assert json.loads(tags["stats"])["valid_pixels"] == int(np.isfinite(d).sum()) == res.stats.valid_pixels
    assert tags["region"] == res.region
    assert abs(res.stats.mean - float(np.nanmean(d.astype(np.float64)))) < 1e-6
    assert abs(res.stats.p95 - float(np.nanpercentile(d, 95))) <= 2e-4
    assert res.path == out and out.with_suffix(".png").exists() and res.quicklooks == [out.with_suffix(".png")]
    from PIL import Image

    with Image.open(out.with_suffix(".png")) as im:
        assert im.format == "PNG" and im.width >= d.shape[1]


def test_region_mask_and_ownership(home, tmp_path):
    pairs = _store_pair(home)
    a, _ = pairs[T1]
    # A box over the western half of the window: the eastern pixels are outside.
    lon, lat = pixel_to_lonlat(a.grid, np.array([0, a.grid.height - 1]), np.array([0, 24]))
    region = resolve_region(bbox=f"{lon.min() - 0.01},{lat.min() - 0.01},{lon.max()},{lat.max() + 0.01}")
    assert region.tiles == (T1,)
    res = change_map(region, "2020,2024", tmp_path / "c.tif", home=home, progress=False)
    with rasterio.open(res.path) as src:
        d = src.read(1)
    inside = region.mask(a.grid)
    assert 0 < inside.sum() < inside.size
    assert np.isnan(d[~inside]).all()
    ok = inside & valid_scales(a.scales)
    assert np.isfinite(d[ok]).all()
    assert res.region.startswith("bbox ")


def test_grids_on_one_lattice_with_other_extents_are_aligned(home, tmp_path):
    store = TileStore(home)
    a = small_tile(T1, A)
    # Year B's grid starts 2 rows lower and 3 columns further east (same lattice).
    g = a.grid
    gb = TileGrid(T1, g.epsg, (10.0, 0.0, g.transform[2] + 30.0, 0.0, -10.0, g.transform[5] - 20.0),
                  g.height, g.width)
    b_same = _later(a, B, 7)
    emb_b = np.zeros_like(b_same.embeddings)
    sc_b = np.full(g.shape, np.nan, dtype=np.float32)
    emb_b[:-2, :-3] = b_same.embeddings[2:, 3:]
    sc_b[:-2, :-3] = b_same.scales[2:, 3:]
    store.write(a)
    store.write(TileData(T1, B, emb_b, sc_b, gb, "v1", "test", False))
    res = change_map([T1], (A, B), tmp_path / "c.tif", home=home, progress=False)
    with rasterio.open(res.path) as src:
        d = src.read(1)
        assert tuple(src.transform)[:6] == g.transform  # year A's grid
    ref = _reference(a, b_same)
    ref[:2, :] = np.nan  # not covered by year B's grid
    ref[:, :3] = np.nan
    np.testing.assert_array_equal(np.isnan(d), np.isnan(ref))
    np.testing.assert_allclose(d[np.isfinite(d)], ref[np.isfinite(ref)], atol=1e-6)


@pytest.mark.parametrize("change", ["zone", "fraction"])
def test_grids_that_do_not_match_fail_clearly(home, change):
    store = TileStore(home)
    a = small_tile(T1, A)
    g = a.grid
    if change == "zone":
        gb = TileGrid(T1, 32736, g.transform, g.height, g.width)
    else:
        gb = TileGrid(T1, g.epsg, (10.0, 0.0, g.transform[2] + 4.0, 0.0, -10.0, g.transform[5]), g.height, g.width)
    store.write(a)
    store.write(TileData(T1, B, a.embeddings, a.scales, gb, "v1", "test", False))
    with pytest.raises(InvalidInputError, match=f"{T1.name}.*(different grids|shifted)"):
        change_map([T1], (A, B), None, home=home, progress=False)


def test_missing_tiles_name_tiles_and_download_commands(home):
    store = TileStore(home)
    store.write(small_tile(T1, A))
    store.write(small_tile(T2, A))
    store.write(small_tile(T2, B))
    with pytest.raises(TileNotFoundError) as err:
        change_map([T1, T2], (A, B), None, home=home, progress=False)
    msg = str(err.value)
    assert f"{B}: {T1.name}" in msg and "source=" in msg
    assert T2.name not in msg.split("(")[1].split(")")[0]  # T2 is stored in both years
    from tessera_search.cli import cli_message

    cli = cli_message(err.value)  # the CLI names the command that fetches them
    assert f"tessera-search download --tile {T1.name} --year {B}" in cli and "--source" in cli


def test_source_fetches_missing_tiles(home, tmp_path):
    mirror = tmp_path / "mirror"
    write_mirror(mirror, [T1.name], year=A, seed=1)
    write_mirror(mirror, [T1.name], year=B, seed=2)
    res = change_map([T1], (A, B), None, home=home, source=str(mirror), progress=False)
    store = TileStore(home)
    assert store.has(T1, A) and store.has(T1, B)
    assert res.stats.valid_pixels > 0 and res.path is None and res.files == []


def test_source_without_a_tile_in_one_year_skips_it(home, tmp_path):
    mirror = tmp_path / "mirror"
    write_mirror(mirror, [T1.name, T2.name], year=A, seed=1)
    write_mirror(mirror, [T1.name], year=B, seed=2)
    res = change_map([T1, T2], (A, B), None, home=home, source=str(mirror), progress=False)
    assert res.tiles == [T1] and res.skipped == [T2]
    assert res.to_json()["skipped"] == [T2.name]


def test_no_valid_pixel_is_an_error(home):
    store = TileStore(home)
    a = small_tile(T1, A)
    a.scales[:] = np.nan
    store.write(a)
    store.write(small_tile(T1, B))
    with pytest.raises(NoDataError, match="no pixel valid in both 2020 and 2024"):
        change_map([T1], (A, B), None, home=home, progress=False)


def test_zones_need_crs_and_per_tile_writes_each_grid(home, tmp_path):
    pairs = _store_pair(home, (WEST, EAST))
    with pytest.raises(InvalidInputError, match="--crs"):
        change_map([WEST, EAST], (A, B), tmp_path / "x.tif", home=home, progress=False)
    assert not (tmp_path / "x.tif").exists()
    res = change_map([WEST, EAST], (A, B), tmp_path / "ll.tif", home=home, crs="EPSG:4326", progress=False)
    with rasterio.open(res.path) as src:
        assert src.crs.to_epsg() == 4326
        d = src.read(1)
        lon, lat = pixel_to_lonlat(pairs[EAST][0].grid, 20, 30)
        row, col = src.index(float(lon), float(lat))
        ref = _reference(*pairs[EAST])[20, 30]
        assert abs(d[row, col] - ref) < 1e-6
    res = change_map([WEST, EAST], (A, B), tmp_path / "pt" / "c.tif", home=home, per_tile=True, progress=False)
    assert sorted(p.name for p in res.files) == sorted(
        [f"c_{WEST.name}.tif", f"c_{EAST.name}.tif", f"c_{WEST.name}.png", f"c_{EAST.name}.png"])
    for t in (WEST, EAST):
        with rasterio.open(tmp_path / "pt" / f"c_{t.name}.tif") as src:
            a, b = pairs[t]
            assert src.crs.to_epsg() == a.grid.epsg and tuple(src.transform)[:6] == a.grid.transform
            np.testing.assert_allclose(src.read(1), _reference(a, b), atol=1e-6)


# ---------------------------------------------------------------------------- top places


def _all_pixels(pairs):
    lon, lat, dist, names, rows, cols = [], [], [], [], [], []
    for t, (a, b) in sorted(pairs.items()):
        ref = _reference(a, b)
        r, c = np.nonzero(np.isfinite(ref))
        lo, la = pixel_to_lonlat(a.grid, r, c)
        lon.append(lo), lat.append(la), dist.append(ref[r, c]), rows.append(r), cols.append(c)
        names.append(np.full(r.size, t.name, dtype=object))
    return tuple(np.concatenate(v) for v in (lon, lat, dist, names, rows, cols))


# Separations at least 1 % away from any distance between pixel centres (10 m lattice),
# so the spherical check here and the ellipsoidal rule agree on every pair.
@pytest.mark.parametrize("sep", [0.0, 35.0, 137.5])
def test_top_places_follow_the_greedy_rule(home, tmp_path, sep):
    pairs = _store_pair(home, (T1, T2))
    res = change_map([T1, T2], (A, B), tmp_path / "c.tif", home=home, top=15, min_separation=sep,
                     top_out=tmp_path / "top.geojson", progress=False)
    top = res.top()
    assert len(top) == 15 and [r["rank"] for r in top] == list(range(1, 16))
    dist = np.array([r["distance"] for r in top])
    assert np.all(np.diff(dist) <= 0)
    lon, lat = res.top_lon, res.top_lat
    for i in range(15):
        for j in range(i):
            assert _metres(lon[i], lat[i], lon[j], lat[j]) >= sep * (1 - 1e-6)
    # The same places as one greedy over every pixel (the two windows are ~11 km apart).
    alon, alat, adist, anames, arows, acols = _all_pixels(pairs)
    want = _brute_greedy(alon, alat, adist, 15, sep)
    assert [(r["tile"], r["row"], r["col"]) for r in top] == [
        (anames[i], int(arows[i]), int(acols[i])) for i in want]
    np.testing.assert_allclose(dist, adist[want], atol=1e-6)
    # Each place's distance is the map's value there; the first is the map's maximum.
    with rasterio.open(res.path) as src:
        d = src.read(1)
        to_utm = Transformer.from_crs(4326, src.crs.to_epsg(), always_xy=True)
        for r in top:
            row, col = src.index(*to_utm.transform(r["lon"], r["lat"]))
            assert d[row, col] == np.float32(r["distance"])
    assert top[0]["distance"] == float(np.nanmax(d))
    doc = json.loads((tmp_path / "top.geojson").read_text())
    assert [f["properties"]["rank"] for f in doc["features"]] == list(range(1, 16))
    assert doc["features"][0]["geometry"]["coordinates"] == pytest.approx([lon[0], lat[0]], abs=1e-7)
    assert doc["tessera_search"]["years"] == [A, B]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_top_places_as_geoparquet_or_csv(home, tmp_path, suffix):
    from tessera_search.vectors import read_metadata

    _store_pair(home)
    out = tmp_path / f"top{suffix}"
    res = change_map([T1], (A, B), None, home=home, top=3, top_out=out)
    assert res.top_path == out and res.files == [out]
    meta = read_metadata(out)
    assert meta["kind"] == "most changed places" and meta["years"] == [A, B] and meta["synthetic"] is False
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(out)
        assert t["rank"].to_pylist() == [1, 2, 3] and t["tile"].to_pylist() == [T1.name] * 3
        np.testing.assert_array_equal(t["lon"].to_numpy(), res.top_lon)
        np.testing.assert_array_equal(t["distance"].to_numpy(), res.top_distance)
    else:
        import csv

        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [int(r["rank"]) for r in rows] == [1, 2, 3]
        assert [int(r["row"]) for r in rows] == res.top_row.tolist()


def test_library_speaks_in_parameter_names_and_never_prints(home, tmp_path, capsys):
    _store_pair(home)
    with pytest.raises(InvalidInputError, match="^top_out writes the most changed places: give top > 0"):
        change_map([T1], (A, B), None, home=home, top_out=tmp_path / "x.geojson")
    with pytest.raises(InvalidInputError, match="^per_tile needs out"):
        change_map([T1], (A, B), None, home=home, per_tile=True)
    with pytest.raises(InvalidInputError, match="^min_separation must be"):
        change_map([T1], (A, B), None, home=home, min_separation=-1)
    with pytest.raises(InvalidInputError, match="^top must be 0 or more"):
        change_map([T1], (A, B), None, home=home, top=-1)
    with pytest.raises(InvalidInputError, match="^years "):
        parse_years("2020")
    with pytest.raises(InvalidInputError, match=r"top_out .*'\.shp' is not a supported output"):
        change_map([T1], (A, B), None, home=home, top=2, top_out=tmp_path / "x.shp")
    seen = []
    res = change_map([T1], (A, B), tmp_path / "c.tif", home=home, top=2,
                     on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 1)] and res.quicklooks
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_quicklook_shows_places_colour_bar_and_synthetic_badge(home, tmp_path):
    from PIL import Image

    from tessera_search.quicklook import RAMP_CHANGE, SYNTHETIC_COLOUR

    grid = small_grid(T1, 60, 60)
    store = TileStore(home)
    store.write(generate_tile(T1, A, seed=0, grid=grid).data)
    store.write(generate_tile(T1, B, seed=0, grid=grid).data)
    res = change_map([T1], (A, B), tmp_path / "c.tif", home=home, top=3)
    with Image.open(res.quicklooks[0]) as im:
        px = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for colour in (SYNTHETIC_COLOUR, RAMP_CHANGE[0][1], RAMP_CHANGE[-1][1]):  # badge, the bar's ends
        assert np.any(np.all(px == np.array(colour, np.uint8), axis=1)), colour


def test_top_places_are_thinned_across_utm_zones(home):
    pairs = _store_pair(home, (WEST, EAST))
    alon, alat, adist, anames, _, _ = _all_pixels(pairs)
    # The windows are ~11 km apart: 12 km leaves one place, 5 km one per tile.
    one = change_map([WEST, EAST], (A, B), None, home=home, top=5, min_separation=12_000, progress=False)
    assert len(one.top()) == 1 and one.top_distance[0] == np.float32(adist.max())
    two = change_map([WEST, EAST], (A, B), None, home=home, top=5, min_separation=5_000, progress=False)
    assert sorted(two.top_tile.tolist()) == sorted([WEST.name, EAST.name])
    for t in (WEST, EAST):
        assert float(two.top_distance[two.top_tile == t.name][0]) == pytest.approx(
            float(adist[anames == t.name].max()), abs=1e-6)


# ---------------------------------------------------------------------------- synthetic truth


def test_changed_ground_truth_has_clearly_higher_distance(home, tmp_path):
    grid = small_grid(T1, 160, 160)
    ya, yb = generate_tile(T1, A, seed=0, grid=grid), generate_tile(T1, B, seed=0, grid=grid)
    store = TileStore(home)
    store.write(ya.data)
    store.write(yb.data)
    res = change_map([T1], (A, B), tmp_path / "c.tif", home=home, top=10, progress=False)
    assert res.synthetic
    with rasterio.open(res.path) as src:
        assert src.tags()["synthetic"] == "true"
        d = src.read(1)
    land = ~np.isin(ya.classes, list(WATER_CLASSES))
    changed = (ya.classes != yb.classes) & land
    unchanged = (ya.classes == yb.classes) & land
    assert changed.sum() > 1000 and unchanged.sum() > 1000
    assert np.isnan(d[~land]).all()
    m_changed, m_same = float(np.nanmean(d[changed])), float(np.nanmean(d[unchanged]))
    assert m_changed > m_same + 0.1 and m_changed > 1.5 * m_same, (m_changed, m_same)
    # The most changed places lie in changed fields.
    rows, cols, _ = lonlat_to_pixel(grid, res.top_lon, res.top_lat)
    assert changed[rows, cols].mean() >= 0.8


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def change_cli(cli):
    import tessera_search.cli.commands_change  # noqa: F401 - registers `change` on the app

    return cli


def test_cli_writes_files_and_json(change_cli, home, tmp_path):
    _store_pair(home, (T1, T2))
    out, geo = tmp_path / "o" / "change.tif", tmp_path / "o" / "top.geojson"
    code, stdout, err = change_cli("--home", home, "change", "--tile", T1.name, "--tile", T2.name,
                                   "--years", "2020,2024", "--out", out, "--top", "4", "--top-out", geo, "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["years"] == [A, B] and doc["out"] == str(out) and doc["region"].startswith("tiles ")
    assert set(doc["stats"]) >= {"valid_pixels", "mean", "p50", "p95", "p99"}
    assert [r["rank"] for r in doc["top"]] == [1, 2, 3, 4]
    assert set(doc["top"][0]) == {"rank", "lon", "lat", "tile", "row", "col", "distance"}
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32737
        d = src.read(1)
    assert doc["stats"]["valid_pixels"] == int(np.isfinite(d).sum())
    assert doc["top"][0]["distance"] == pytest.approx(float(np.nanmax(d)))
    from PIL import Image

    with Image.open(out.with_suffix(".png")) as im:
        assert im.format == "PNG"
    features = json.loads(geo.read_text())["features"]
    assert [f["properties"]["tile"] for f in features] == [r["tile"] for r in doc["top"]]
    # Human output: summary and the table.
    code, stdout, err = change_cli("--home", home, "change", "--tile", T1.name, "--years", "2020,2024", "--top", "3")
    assert code == 0, err
    assert "pixels valid in both years" in stdout and "p95" in stdout
    for col in ("rank", "lon", "lat", "tile", "row", "col", "distance"):
        assert col in stdout
    assert T1.name in stdout


@pytest.mark.parametrize("years", ["2020", "2020,2020", "x,2024"])
def test_cli_rejects_bad_years(change_cli, home, years):
    code, _, err = change_cli("--home", home, "change", "--tile", T1.name, "--years", years)
    assert code == 2 and "--years" in err


@pytest.mark.parametrize("extra", [["--top-out", "x.geojson"], ["--per-tile"]])
def test_cli_rejects_options_that_need_others(change_cli, home, extra):
    code, _, err = change_cli("--home", home, "change", "--tile", T1.name, "--years", "2020,2024", *extra)
    assert code == 2 and extra[0] in err


def test_cli_missing_tiles_exit_1_with_next_step(change_cli, home):
    code, _, err = change_cli("--home", home, "change", "--tile", T1.name, "--years", "2020,2024")
    assert code == 1
    assert "TileNotFoundError" in err and "tessera-search download" in err and T1.name in err


def test_cli_help(change_cli):
    code, out, _ = change_cli("change", "--help")
    assert code == 0
    for opt in ("--years", "--out", "--crs", "--per-tile", "--top", "--min-separation", "--top-out", "--source"):
        assert opt in out
