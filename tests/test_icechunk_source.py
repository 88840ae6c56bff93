"""The Icechunk source (hemisphere groups NNN/NNS, band last): tiles read like NPY and Zarr."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import zarr
from _helpers import small_tile, write_mirror

from tessera_search.errors import CorruptTileError, SourceUnavailableError
from tessera_search.grid import Tile
from tessera_search.ingest import download, open_source
from tessera_search.sources.base import OBSERVATION_KINDS
from tessera_search.sources.icechunkstore import IcechunkSource, is_icechunk_repo, parse_s3_url, s3_http_url
from tessera_search.store import TileStore

icechunk = pytest.importorskip("icechunk")

NORTH = "grid_0.15_51.55"  # zone 31 north
SOUTH = "grid_36.85_-1.25"  # zone 37 south: positive northings in group 37S
EQ_NORTH, EQ_SOUTH = "grid_36.85_0.05", "grid_36.85_-0.05"  # either side of the equator


def group_origin(data, row: int, col: int) -> tuple[float, float]:
    """(x0, y0) of a hemisphere group (in the tile's own CRS) putting ``data``'s corner at (row, col)."""
    _, _, c, _, _, f = data.grid.transform
    return c - 10.0 * col, f + 10.0 * row


class Repo:
    """A small Icechunk repository written with icechunk itself, group by group."""

    def __init__(self, storage) -> None:
        self.repo = icechunk.Repository.create(storage)
        self.session = self.repo.writable_session("main")
        self.root = zarr.group(store=self.session.store, attributes={"tessera:version": "v1.1"})

    def group(self, name: str, x0: float, y0: float, size: int = 512, years=(2023,), complete=None,
              centre_transform: bool = False, obs: bool = True, chunk: int = 64) -> zarr.Group:
        epsg = (32700 if name.endswith("S") else 32600) + int(name[:2])
        tx, ty = (x0 + 5.0, y0 - 5.0) if centre_transform else (x0, y0)
        attrs = {"proj:code": f"EPSG:{epsg}", "spatial:transform": [10.0, 0.0, tx, 0.0, -10.0, ty],
                 "spatial:shape": [size, size], "spatial:bbox": [x0, y0 - 10.0 * size, x0 + 10.0 * size, y0],
                 "years_complete": list(years if complete is None else complete)}
        g = self.root.create_group(name, attributes=attrs)
        t = len(years)
        g.create_array("embeddings", shape=(t, size, size, 128), dtype="int8", chunks=(1, chunk, chunk, 128),
                       fill_value=0, dimension_names=["time", "northing", "easting", "band"])
        g.create_array("scales", shape=(t, size, size), dtype="float32", chunks=(1, chunk, chunk),
                       fill_value=float("nan"), dimension_names=["time", "northing", "easting"])
        if obs:
            for k in OBSERVATION_KINDS:
                g.create_array(f"{k}_obs_count", shape=(t, size, size), dtype="uint16", chunks=(1, chunk, chunk),
                               fill_value=0, dimension_names=["time", "northing", "easting"])
        g.create_array("time", shape=(t,), dtype="int32", dimension_names=["time"])[...] = np.asarray(years)
        return g

    def place(self, name: str, data, row: int, col: int, t: int = 0) -> None:
        g = self.root[name]
        h, w = data.grid.shape
        g["embeddings"][t, row:row + h, col:col + w, :] = data.embeddings
        g["scales"][t, row:row + h, col:col + w] = data.scales
        if "s2_obs_count" in g:
            for i, k in enumerate(OBSERVATION_KINDS):
                g[f"{k}_obs_count"][t, row:row + h, col:col + w] = obs_counts(data)[..., i]

    def commit(self) -> None:
        self.session.commit("test data")


def obs_counts(data) -> np.ndarray:
    """Deterministic per-pixel counts for a tile: (H, W, 3) uint16."""
    h, w = data.grid.shape
    base = (np.arange(h)[:, None] * 7 + np.arange(w)[None, :] * 3) % 40
    return np.stack([base + 15, base // 2, base // 3 + 1], axis=-1).astype(np.uint16)


def local_repo(path: Path) -> Repo:
    return Repo(icechunk.local_filesystem_storage(str(path)))


def repo_with(path: Path, data, row: int = 100, col: int = 60, **kw) -> Path:
    south = data.grid.epsg // 100 == 327
    name = f"{data.grid.epsg % 100:02d}{'S' if south else 'N'}"
    r = local_repo(path)
    r.group(name, *group_origin(data, row, col), **kw)
    r.place(name, data, row, col)
    r.commit()
    return path


def window_of(got, want):
    r = round((got.grid.transform[5] - want.grid.transform[5]) / 10.0)
    c = round((want.grid.transform[2] - got.grid.transform[2]) / 10.0)
    h, w = want.grid.shape
    return (slice(r, r + h), slice(c, c + w))


def assert_window_equals(got, want) -> None:
    win = window_of(got, want)
    np.testing.assert_array_equal(got.embeddings[win], want.embeddings)
    np.testing.assert_array_equal(got.scales[win].view(np.uint32), want.scales.view(np.uint32))
    outside = np.ones(got.grid.shape, bool)
    outside[win] = False
    assert not got.valid[outside].any() and not got.embeddings[outside].any()


def test_recognised_and_ingested_like_npy(tmp_path):
    tile = Tile.from_name(NORTH)
    written = write_mirror(tmp_path / "npy", [NORTH])
    root = repo_with(tmp_path / "v11.icechunk", written[NORTH])
    assert is_icechunk_repo(root) and not is_icechunk_repo(tmp_path / "npy")
    assert isinstance(open_source(root, tmp_path / "ws"), IcechunkSource)
    a = download([tile], 2023, source=tmp_path / "npy", home=tmp_path / "a", progress=False)
    b = download([tile], 2023, source=root, home=tmp_path / "b", progress=False)
    assert a.stored == b.stored == [tile] and not b.failed
    npy, ice = TileStore(tmp_path / "a").read(tile, 2023), TileStore(tmp_path / "b").read(tile, 2023)
    assert ice.grid == npy.grid.__class__(tile, npy.grid.epsg, ice.grid.transform, *ice.grid.shape)
    assert_window_equals(ice, npy)
    assert ice.dataset_version == "v1.1" and ice.observations is not None
    np.testing.assert_array_equal(ice.observations[window_of(ice, npy)], obs_counts(npy))


def test_southern_tile_positive_northings_in_its_own_crs(tmp_path):
    data = small_tile(SOUTH)
    root = repo_with(tmp_path / "s.icechunk", data)
    g = zarr.open_group(IcechunkSource(root)._session.store, mode="r")["37S"]
    assert g.attrs["spatial:transform"][5] > 9_000_000 and g.attrs["proj:code"] == "EPSG:32737"
    rep = download([data.tile], 2023, source=root, home=tmp_path / "ws", progress=False)
    assert rep.stored == [data.tile]
    got = TileStore(tmp_path / "ws").read(data.tile, 2023)
    assert got.grid.epsg == 32737
    assert_window_equals(got, data)


def at_equator(data):
    """The small tile moved to the edge of its tile grid that touches the equator."""
    from tessera_search.grid import TileGrid, expected_grid

    full = expected_grid(data.tile)
    h, w = data.grid.shape
    south = full.epsg // 100 == 327
    y0 = 10_000_000.0 if south else 10.0 * h
    data.grid = TileGrid(data.tile, full.epsg, (10.0, 0.0, full.transform[2], 0.0, -10.0, y0), h, w)
    # a northern tile's grid has one row below the equator (its centre at -5 m): that row
    # comes from the southern group, never from the northern group's rows past the equator
    assert (full.transform[5] == 10_000_000.0) if south else (full.transform[5] - 10.0 * full.height == -10.0)
    return data


def test_hemisphere_groups_overlapping_at_the_equator(tmp_path):
    """37N runs south past the equator and 37S north past it, each with other data there:
    each tile reads only its own hemisphere's rows."""
    north, south = at_equator(small_tile(EQ_NORTH, seed=1)), at_equator(small_tile(EQ_SOUTH, seed=2))
    assert north.grid.epsg == 32637 and south.grid.epsg == 32737
    r = local_repo(tmp_path / "eq.icechunk")
    size = 256
    # groups placed so each tile sits at the group's edge next to the equator, and the
    # group's array extends 80 rows past the equator (filled with the other tile's data)
    nx0, ny0 = group_origin(north, size - 80 - north.grid.height, 40)
    sx0, sy0 = group_origin(south, 80, 40)
    r.group("37N", nx0, ny0, size=size)
    r.group("37S", sx0, sy0, size=size)
    r.place("37N", north, size - 80 - north.grid.height, 40)
    r.place("37S", south, 80, 40)
    junk_n, junk_s = small_tile(EQ_NORTH, seed=9, height=80, width=48), small_tile(EQ_SOUTH, seed=8, height=80, width=48)
    r.place("37N", junk_s, size - 80, 40)  # rows south of the equator in the northern group
    r.place("37S", junk_n, 0, 40)  # rows north of the equator in the southern group
    r.commit()
    src = IcechunkSource(tmp_path / "eq.icechunk")
    got = {d.tile.name: d for d in src.fetch([north.tile, south.tile], 2023)}
    gn, gs = got[EQ_NORTH], got[EQ_SOUTH]
    assert_window_equals(gs, south)
    # the northern grid's row below the equator is the southern group's first row, as in the
    # one merged zone grid of the geoemb layout (never the northern group's rows past the equator)
    np.testing.assert_array_equal(gn.embeddings[-1, :48], south.embeddings[0])
    np.testing.assert_array_equal(gn.scales[-1, :48].view(np.uint32), south.scales[0].view(np.uint32))
    np.testing.assert_array_equal(gn.observations[-1, :48], obs_counts(south)[0])
    gn.embeddings[-1], gn.scales[-1] = 0, np.nan
    assert_window_equals(gn, north)
    zn, zs = src._zone("37N"), src._zone("37S")
    assert zn.rows == (0, size - 80) and zs.rows == (80, size)


def test_year_not_in_years_complete_is_a_gap(tmp_path):
    data = small_tile(NORTH)
    root = local_repo(tmp_path / "gap.icechunk")
    root.group("31N", *group_origin(data, 10, 10), years=(2022, 2023), complete=(2022,))
    root.place("31N", data, 10, 10, t=0)
    root.place("31N", data, 10, 10, t=1)  # data present, but not published: still a gap
    root.commit()
    rep = download([data.tile], 2023, source=tmp_path / "gap.icechunk", home=tmp_path / "ws", progress=False)
    assert rep.stored == [] and rep.unavailable == []
    (fail,) = rep.failed
    assert "publication gap" in fail.reason and "31N" in fail.reason and "[2022]" in fail.reason
    ok = download([data.tile], 2022, source=tmp_path / "gap.icechunk", home=tmp_path / "ws", progress=False)
    assert ok.stored == [data.tile]


def test_pixel_centre_transform_of_old_snapshots(tmp_path):
    data = small_tile(NORTH)
    root = repo_with(tmp_path / "old.icechunk", data, centre_transform=True)
    (got,) = IcechunkSource(root).fetch([data.tile], 2023)
    assert_window_equals(got, data)


def test_transform_off_the_bbox_is_refused(tmp_path):
    data = small_tile(NORTH)
    r = local_repo(tmp_path / "bad.icechunk")
    g = r.group("31N", *group_origin(data, 10, 10))
    t = list(g.attrs["spatial:transform"])
    t[2] += 3.0  # neither corner nor centre
    g.attrs["spatial:transform"] = t
    r.commit()
    (fail,) = IcechunkSource(tmp_path / "bad.icechunk").fetch([data.tile], 2023)
    assert "neither the corner nor the first pixel centre" in fail.reason


def test_sentinel_scales_are_no_data(tmp_path):
    data = small_tile(NORTH)
    data.scales[5, 10], data.scales[6, 10], data.scales[7, 10] = np.nan, np.inf, 1e6
    root = repo_with(tmp_path / "s.icechunk", data)
    (got,) = IcechunkSource(root).fetch([data.tile], 2023)
    win = window_of(got, data)
    valid = got.valid[win]
    assert not valid[5, 10] and not valid[6, 10] and not valid[7, 10]
    np.testing.assert_array_equal(valid, data.valid)


def test_misaligned_group_names_the_tile(tmp_path):
    data = small_tile(NORTH)
    r = local_repo(tmp_path / "m.icechunk")
    x0, y0 = group_origin(data, 10, 10)
    r.group("31N", x0 + 4.0, y0)
    r.commit()
    src = IcechunkSource(tmp_path / "m.icechunk")
    with pytest.raises(CorruptTileError, match=f"{NORTH}.*off the lattice"):
        src._window(data.tile)


def test_pixel_json_shows_observation_counts(tmp_path, cli):
    data = small_tile(NORTH)
    root = repo_with(tmp_path / "o.icechunk", data)
    home = tmp_path / "ws"
    code, out, err = cli("--home", str(home), "download", "--tile", NORTH, "--year", "2023", "--source", str(root))
    assert code == 0, err
    from tessera_search.grid import pixel_to_lonlat

    r, c = 20, 30
    lon, lat = pixel_to_lonlat(data.grid, r, c)
    code, out, err = cli("--home", str(home), "pixel", "--point", f"{float(lon)},{float(lat)}", "--year", "2023", "--json")
    assert code == 0, err
    doc = json.loads(out)
    want = obs_counts(data)[r, c]
    assert doc["observations"] == {k: int(v) for k, v in zip(OBSERVATION_KINDS, want)}


def test_s3_urls_parse_and_map_to_https(monkeypatch):
    assert parse_s3_url("s3://tessera-embeddings/v1.1/dclimate.icechunk") == ("tessera-embeddings", "v1.1/dclimate.icechunk")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert s3_http_url("s3://b-1/tessera/zarr/v1") == "https://b-1.s3.us-west-2.amazonaws.com/tessera/zarr/v1/"
    assert s3_http_url("s3://us-west-2.opendata.source.coop/tessera/zarr/v1") == \
        "https://s3.us-west-2.amazonaws.com/us-west-2.opendata.source.coop/tessera/zarr/v1/"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert s3_http_url("s3://b-1/p") == "http://127.0.0.1:9000/b-1/p/"
    for bad in ("s3://", "s3://B/x", "s3://b-1/../x", "http://b/x"):
        with pytest.raises(Exception, match="not an s3://bucket/prefix"):
            parse_s3_url(bad)


@pytest.fixture
def s3_server(monkeypatch):
    """A moto S3 server on 127.0.0.1 with a public-read bucket; yields (endpoint, bucket)."""
    moto_server = pytest.importorskip("moto.server")
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    endpoint = f"http://127.0.0.1:{srv._server.server_port}"
    bucket = "tessera-test"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-west-2")
    try:  # moto's server keeps its state between tests of one process
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    yield endpoint, bucket, s3
    srv.stop()


def test_icechunk_over_s3_ingests_like_the_local_repository(tmp_path, s3_server):
    endpoint, bucket, _ = s3_server
    data = small_tile(SOUTH)
    storage = icechunk.s3_storage(bucket=bucket, prefix="v1.1/dclimate.icechunk", region="us-west-2",
                                  endpoint_url=endpoint, allow_http=True, force_path_style=True,
                                  access_key_id="test", secret_access_key="test")
    r = Repo(storage)
    r.group("37S", *group_origin(data, 100, 60))
    r.place("37S", data, 100, 60)
    r.commit()
    local = repo_with(tmp_path / "local.icechunk", data)
    url = f"s3://{bucket}/v1.1/dclimate.icechunk"
    src = open_source(url, tmp_path / "ws")
    assert isinstance(src, IcechunkSource) and src.is_s3  # anonymous: no credentials in the environment
    a = download([data.tile], 2023, source=url, home=tmp_path / "a", progress=False)
    b = download([data.tile], 2023, source=local, home=tmp_path / "b", progress=False)
    assert a.stored == b.stored == [data.tile]
    ta, tb = TileStore(tmp_path / "a").read(data.tile, 2023), TileStore(tmp_path / "b").read(data.tile, 2023)
    np.testing.assert_array_equal(ta.embeddings, tb.embeddings)
    np.testing.assert_array_equal(ta.scales.view(np.uint32), tb.scales.view(np.uint32))
    np.testing.assert_array_equal(ta.observations, tb.observations)
    # what is stored is not fetched again
    again = download([data.tile], 2023, source=url, home=tmp_path / "a", progress=False)
    assert again.present == [data.tile] and again.stored == []


def zarr_store_in_bucket(tmp_path, s3, bucket: str, prefix: str) -> Path:
    """A geoemb store of the NORTH tile, written locally and uploaded below ``prefix``."""
    from test_zarr_source import store_with

    written = write_mirror(tmp_path / "npy", [NORTH])
    root = store_with(tmp_path / "geoemb.zarr", written[NORTH])
    for f in root.rglob("*"):
        if f.is_file():
            s3.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(root).as_posix()}")
    return root


def test_zarr_store_in_a_bucket_reads_over_https(tmp_path, s3_server):
    endpoint, bucket, s3 = s3_server
    root = zarr_store_in_bucket(tmp_path, s3, bucket, "zarr/v1.1")
    tile = Tile.from_name(NORTH)
    a = download([tile], 2023, source=f"s3://{bucket}/zarr/v1.1", home=tmp_path / "a", progress=False)
    b = download([tile], 2023, source=root, home=tmp_path / "b", progress=False)
    assert a.stored == b.stored == [tile]
    np.testing.assert_array_equal(TileStore(tmp_path / "a").read(tile, 2023).embeddings,
                                  TileStore(tmp_path / "b").read(tile, 2023).embeddings)


def test_unreachable_object_store_fails_fast_and_clearly(tmp_path, monkeypatch):
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(SourceUnavailableError, match="cannot reach the object store.*check the network"):
        open_source("s3://tessera-embeddings/v1.1/dclimate.icechunk", tmp_path / "ws")
    assert time.monotonic() - t0 < 10


def test_offline_default_dataset_says_how_to_pass_source(tmp_path, monkeypatch, cli):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")  # nothing listens: offline
    code, out, err = cli("--home", str(tmp_path / "ws"), "download", "--tile", SOUTH, "--year", "2024",
                         "--dataset", "v1.1")
    assert code == 1
    assert "cannot reach the published store of dataset v1.1 (s3://tessera-embeddings/v1.1/dclimate.icechunk)" in err
    assert "--source DIR|URL|synthetic" in err
    code, out, err = cli("--home", str(tmp_path / "ws"), "download", "--tile", SOUTH, "--year", "2024",
                         "--dataset", "v1.2")
    assert code == 2 and "unknown dataset 'v1.2'" in err and "v1.1" in err


def test_zarr_store_in_a_bucket_with_credentials_is_read_signed(tmp_path, s3_server, monkeypatch):
    from tessera_search.sources.zarrstore import ZarrSource

    endpoint, bucket, s3 = s3_server
    root = zarr_store_in_bucket(tmp_path, s3, bucket, "private/v1.1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    src = open_source(f"s3://{bucket}/private/v1.1", tmp_path / "ws")
    assert isinstance(src, ZarrSource) and src.is_http
    tile = Tile.from_name(NORTH)
    (got,) = src.fetch([tile], 2023)
    rep = download([tile], 2023, source=root, home=tmp_path / "b", progress=False)
    assert rep.stored == [tile]
    want = TileStore(tmp_path / "b").read(tile, 2023)
    np.testing.assert_array_equal(got.embeddings, want.embeddings)
    np.testing.assert_array_equal(got.scales.view(np.uint32), want.scales.view(np.uint32))
