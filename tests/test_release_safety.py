"""Release sources against hostile or broken mirrors: paths that escape the mirror,
redirects to other hosts, embeddings of the wrong width, and connections that drop
again while a download resumes.

Every HTTP test runs real servers on 127.0.0.1; a second server stands in for "another
host" and must never be asked anything.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _helpers import NAIROBI_TILES, small_tile, write_mirror

from tessera_search.errors import CorruptTileError, InvalidInputError
from tessera_search.grid import Tile
from tessera_search.ingest import download
from tessera_search.sources.base import TileData
from tessera_search.sources.layout import bucket_paths, safe_relative_path, write_manifest, write_release_tile
from tessera_search.sources.release import ReleaseSource
from tessera_search.store import TileStore

YEAR = 2023
A, B = (Tile.from_name(n) for n in NAIROBI_TILES[:2])  # A is attacked / damaged, B is fine
SECRET = b"TOPSECRET root:x:0:0:do-not-echo-me\n" * 4


# -- a scriptable static server --------------------------------------------------------
class _Server:
    """Static files under ``root`` with Range support, a request log, redirects and
    scripted misbehaviour per path (``script[path] = [action, ...]``, one per request)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.script: dict[str, list[tuple]] = {}
        self.redirects: dict[str, str] = {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - http.server naming
                owner._serve(self)

        self._srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}/"

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]

    def _serve(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(h.path).path)
        rng = h.headers.get("Range")
        self.requests.append((path, rng))
        h.close_connection = True
        if path in self.redirects:
            h.send_response(302)
            h.send_header("Location", self.redirects[path])
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = file.read_bytes()
        etag = hashlib.md5(data).hexdigest()
        actions = self.script.get(path)
        action = actions.pop(0) if actions else ("serve",)
        start = int(rng[6:].split("-")[0]) if rng and rng.startswith("bytes=") else 0
        if start >= len(data) > 0:
            h.send_response(416)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if action[0] == "wrong_offset":  # a 206 that restarts at byte 0
            h.send_response(206)
            h.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        if action[0] == "chunked_cut":  # one whole chunk, then half of the next, then gone
            whole, part = action[1], action[2]
            h.send_response(200)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            h.wfile.write(b"%x\r\n" % whole + data[:whole] + b"\r\n")
            h.wfile.write(b"%x\r\n" % whole + data[whole:whole + part])
            h.wfile.flush()
            return
        body = data[start:]
        if start:
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("ETag", f'"{etag}"')
        h.end_headers()
        if action[0] == "cut":  # promise the whole body, send ``action[1]`` bytes, hang up
            body = body[: action[1]]
        h.wfile.write(body)
        h.wfile.flush()


@pytest.fixture
def servers():
    made: list[_Server] = []

    def serve(root: Path) -> _Server:
        s = _Server(root)
        made.append(s)
        return s

    yield serve
    for s in made:
        s.close()


# -- helpers ----------------------------------------------------------------------------
def _edit_manifest(root: Path, tile: Tile, **changes) -> None:
    path = root / bucket_paths("v1", YEAR, tile)["manifest"]
    rows = pq.read_table(path).to_pylist()
    hit = [r for r in rows if r["grid_path"].endswith(f"/{tile.name}.npy")]
    assert len(hit) == 1
    hit[0].update(changes)
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` but outside ``skip``: its MD5 and mtime."""
    out = {}
    for p in root.rglob("*"):
        if p.is_relative_to(skip) or p.is_symlink() or not p.is_file():
            continue
        out[str(p)] = (hashlib.md5(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def _victims(tmp_path: Path, mirror: Path) -> dict[str, Path]:
    """Files outside the mirror and the workspace an attacker would like us to touch:
    a secret text file, a valid copy of tile A's vectors and its landmask."""
    out = tmp_path / "outside"
    out.mkdir()
    paths = bucket_paths("v1", YEAR, A)
    v = {"secret": out / "victim.npy", "grid": out / "grid.npy", "landmask": out / "landmask.tiff"}
    v["secret"].write_bytes(SECRET)
    shutil.copyfile(mirror / paths["grid"], v["grid"])
    shutil.copyfile(mirror / paths["landmask"], v["landmask"])
    for p in v.values():
        os.utime(p, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return v


def _file_md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def _assert_refused(rep, home: Path, tmp_path: Path, before: dict) -> None:
    """A skipped with an escape reason, B stored, nothing outside the workspace touched."""
    reasons = {f.tile.name: f.reason for f in rep.failed}
    assert set(reasons) == {A.name}, reasons
    assert "escapes the mirror" in reasons[A.name]
    assert [t.name for t in rep.stored] == [B.name]
    store = TileStore(home)
    assert not store.has(A, YEAR) and store.has(B, YEAR)
    for f in rep.failed:
        assert "TOPSEC" not in str(f) and "root:x" not in str(f)
    assert _snapshot(tmp_path, home) == before, "a file outside the workspace changed"


# -- 2. paths that escape the mirror ---------------------------------------------------
@pytest.mark.parametrize("bad", [
    "/etc/passwd", "//evil.example/x.npy", "../x.npy", "npy/../../x.npy", "a/../b.npy",
    "http://evil.example/x.npy", "file:///etc/passwd", "C:/x.npy", "C:x.npy", "npy\\..\\x.npy",
    "a\x00b.npy", "", ".", "./", 7, None,
])
def test_safe_relative_path_refuses_anything_that_could_leave(bad):
    with pytest.raises(ValueError):
        safe_relative_path(bad)


def test_safe_relative_path_normalises_plain_paths():
    assert safe_relative_path("npy/v1/2023/grid_1.05_1.05/grid_1.05_1.05.npy").endswith("grid_1.05_1.05.npy")
    assert safe_relative_path("./npy//v1/./x.npy") == "npy/v1/x.npy"


@pytest.mark.parametrize("attack", ["absolute", "climb", "landmask_url", "landmask_netpath"])
def test_http_manifest_paths_cannot_touch_files_or_hosts_outside(tmp_path, home, servers, attack):
    mirror = tmp_path / "m"
    write_mirror(mirror, [A.name, B.name])
    victims = _victims(tmp_path, mirror)
    other = servers(tmp_path / "outside")  # "another host": serves the valid copies
    good = servers(mirror)
    if attack == "absolute":  # old behaviour: wrote to the victim's path, then deleted it
        _edit_manifest(mirror, A, grid_path=str(victims["secret"]))
    elif attack == "climb":  # downloads/<source>/../../../outside/victim.npy
        _edit_manifest(mirror, A, grid_path="../../../outside/victim.npy")
    elif attack == "landmask_url":
        _edit_manifest(mirror, A, landmask_path=other.url + "landmask.tiff")
    else:
        _edit_manifest(mirror, A, landmask_path="//" + other.url.split("//")[1] + "landmask.tiff")
    before = _snapshot(tmp_path, home)
    rep = download([A, B], YEAR, source=good.url, home=home, progress=False)
    _assert_refused(rep, home, tmp_path, before)
    assert other.requests == [], "another host was contacted"
    # nothing of A was fetched either: the refusal comes before any request for it
    assert not [p for p in good.paths() if A.name in p]


@pytest.mark.parametrize("attack", ["absolute", "climb", "secret", "landmask", "symlink", "symlink_listing",
                                    "symlinked_dir"])
def test_local_manifest_paths_and_symlinks_cannot_leave_the_mirror(tmp_path, home, attack):
    mirror = tmp_path / "m"
    written = write_mirror(mirror, [A.name, B.name])
    victims = _victims(tmp_path, mirror)
    paths = bucket_paths("v1", YEAR, A)
    # B's vectors sit elsewhere in the mirror behind a symlink: links inside are fine
    b_grid = mirror / bucket_paths("v1", YEAR, B)["grid"]
    (mirror / "elsewhere").mkdir()
    b_grid.rename(mirror / "elsewhere" / "b.npy")
    b_grid.symlink_to(mirror / "elsewhere" / "b.npy")
    if attack == "absolute":  # a valid .npy outside, sizes and MD5 matching: was ingested
        _edit_manifest(mirror, A, grid_path=str(victims["grid"]))
    elif attack == "climb":
        _edit_manifest(mirror, A, grid_path="npy/../../outside/grid.npy")
    elif attack == "secret":  # was opened, and its first bytes quoted in the error
        _edit_manifest(mirror, A, grid_path=str(victims["secret"]), grid_size=None, grid_md5=None)
    elif attack == "landmask":
        _edit_manifest(mirror, A, landmask_path=str(victims["landmask"]))
    elif attack in ("symlink", "symlink_listing"):
        (mirror / paths["grid"]).unlink()
        (mirror / paths["grid"]).symlink_to(victims["grid"])
        if attack == "symlink_listing":
            (mirror / paths["manifest"]).unlink()
    else:  # the whole tile folder is a link to a copy outside
        outside_dir = tmp_path / "outside" / "tiledir"
        shutil.copytree(mirror / paths["directory"], outside_dir)
        shutil.rmtree(mirror / paths["directory"])
        (mirror / paths["directory"]).symlink_to(outside_dir, target_is_directory=True)
    before = _snapshot(tmp_path, home)
    rep = download([A, B], YEAR, source=mirror, home=home, progress=False)
    _assert_refused(rep, home, tmp_path, before)
    np.testing.assert_array_equal(TileStore(home).read(B, YEAR).embeddings, written[B.name].embeddings)


def test_unreadable_npy_errors_never_quote_the_file(tmp_path, home, servers):
    mirror = tmp_path / "m"
    write_mirror(mirror, [A.name, B.name])
    (mirror / bucket_paths("v1", YEAR, A)["grid"]).write_bytes(SECRET)
    write_manifest(mirror, "v1")  # sizes and MD5s agree with the garbage
    for src in (mirror, servers(mirror).url):
        rep = download([A, B], YEAR, source=src, home=home / str(len(str(src))), progress=False)
        (fail,) = rep.failed
        assert fail.tile == A and "not a readable .npy" in fail.reason
        assert "TOPSEC" not in fail.reason and "root:x" not in fail.reason


@pytest.mark.parametrize("where", ["other_host", "outside_prefix"])
def test_redirects_must_stay_below_the_source_url(tmp_path, home, servers, where):
    """A's vectors redirect away from the source (refused); B's redirect to another
    place below the source URL (followed)."""
    site = tmp_path / "site"
    written = write_mirror(site / "mirror", [A.name, B.name])
    other = servers(site)  # holds the same bytes, as a forged copy would
    srv = servers(site)
    rel_a, rel_b = (bucket_paths("v1", YEAR, t)["grid"] for t in (A, B))
    away = {"other_host": f"{other.url}mirror/{rel_a}", "outside_prefix": f"{srv.url}elsewhere/{rel_a}"}[where]
    inside = f"{srv.url}mirror/moved/{rel_b}"
    for url, rel in ((away, rel_a), (inside, rel_b)):
        copy = site / urllib.parse.urlsplit(url).path.lstrip("/")
        if copy != site / "mirror" / rel:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(site / "mirror" / rel, copy)
        srv.redirects[f"/mirror/{rel}"] = url
    rep = download([A, B], YEAR, source=srv.url + "mirror/", home=home, progress=False)
    assert other.requests == [], "another host was contacted"
    assert f"/elsewhere/{rel_a}" not in srv.paths(), "the redirect was followed"
    (fail,) = rep.failed
    assert fail.tile == A and "redirected" in fail.reason and "refusing" in fail.reason
    assert [t.name for t in rep.stored] == [B.name]
    store = TileStore(home)
    assert not store.has(A, YEAR)
    np.testing.assert_array_equal(store.read(B, YEAR).embeddings, written[B.name].embeddings)


def test_http_dataset_version_must_be_a_plain_name(home):
    with pytest.raises(InvalidInputError, match="dataset version"):
        ReleaseSource("http://127.0.0.1:9/", version="../..", download_dir=home)


# -- 3. embeddings of the wrong width ----------------------------------------------------
@pytest.mark.parametrize("width", [127, 129])
@pytest.mark.parametrize("via", ["dir", "http"])
def test_wrong_width_tiles_are_skipped_by_name(tmp_path, home, servers, width, via):
    mirror = tmp_path / "m"
    good = small_tile(B)
    write_release_tile(mirror, "v1", YEAR, good.grid, good.embeddings, good.scales, good.landmask)
    bad = small_tile(A)
    rng = np.random.default_rng(width)
    emb = rng.integers(-127, 128, (*bad.grid.shape, width)).astype(np.int8)
    write_release_tile(mirror, "v1", YEAR, bad.grid, emb, bad.scales, bad.landmask)
    write_manifest(mirror, "v1")
    src = mirror if via == "dir" else servers(mirror).url
    rep = download([A, B], YEAR, source=src, home=home, progress=False)
    (fail,) = rep.failed
    assert fail.tile == A and f"{A.name}.npy" in fail.reason
    assert f"{width}-channel" in fail.reason and "expected 128" in fail.reason
    assert [t for t, _ in TileStore(home).list()] == [B]


@pytest.mark.parametrize("width", [1, 127, 129])
def test_tiledata_refuses_embeddings_that_are_not_128_wide(width):
    t = small_tile(A)
    emb = np.zeros((*t.grid.shape, width), np.int8)
    with pytest.raises(CorruptTileError, match=f"{A.name} \\(2023\\).*{width} channels wide, expected 128"):
        TileData(t.tile, YEAR, emb, t.scales, t.grid, "v1", "test")


# -- 4. connections that drop again during a resumed transfer ---------------------------
def _one_tile(tmp_path, servers):
    mirror = tmp_path / "m"
    written = write_mirror(mirror, [A.name])
    rel = bucket_paths("v1", YEAR, A)["grid"]
    full = (mirror / rel).read_bytes()
    assert len(full) > 200_000
    return servers(mirror), "/" + rel, full, written[A.name]


@pytest.mark.parametrize("second", ["short_206", "chunked_then_short_206", "wrong_offset_206"])
def test_a_second_drop_during_resume_is_retried_not_blamed_on_the_file(tmp_path, home, servers, second):
    srv, path, full, data = _one_tile(tmp_path, servers)
    if second == "short_206":  # 100 kB, drop; resume gives 50 kB of its 206, drop; then the rest
        srv.script[path] = [("cut", 100_000), ("cut", 50_000)]
        want = [None, "bytes=100000-", "bytes=150000-"]
    elif second == "chunked_then_short_206":  # http.client.IncompleteRead mid-chunk
        srv.script[path] = [("chunked_cut", 100_000, 30_000), ("cut", 50_000)]
        want = [None, "bytes=100000-", "bytes=150000-"]
    else:  # resume answered from byte 0 as a 206: start again, never append it
        srv.script[path] = [("cut", 100_000), ("wrong_offset",)]
        want = [None, "bytes=100000-", None]
    src = ReleaseSource(srv.url, download_dir=home / "downloads", retries=3, backoff=0.01)
    (item,) = src.fetch([A], YEAR)
    assert isinstance(item, TileData), item
    np.testing.assert_array_equal(item.embeddings, data.embeddings)
    assert srv.ranges(path) == want


def test_retries_exhausted_keep_the_part_blame_the_connection_and_a_rerun_resumes(tmp_path, home, servers):
    srv, path, full, data = _one_tile(tmp_path, servers)
    srv.script[path] = [("cut", 100_000), ("cut", 50_000)]
    src = ReleaseSource(srv.url, download_dir=home / "downloads", retries=1, backoff=0.01)
    (fail,) = src.fetch([A], YEAR)
    assert not isinstance(fail, TileData)
    host = urllib.parse.urlsplit(srv.url).netloc
    assert f"connection to {host} dropped 2 times while fetching {A.name}.npy" in fail.reason
    assert f"have 150000 of {len(full)} bytes; rerun to resume" in fail.reason
    assert "truncated" not in fail.reason
    (part,) = (home / "downloads").rglob("*.npy.part")
    assert part.read_bytes() == full[:150_000], "the partial download is kept as it was"
    rep = download([A], YEAR, source=srv.url, home=home, progress=False)
    assert [t.name for t in rep.stored] == [A.name] and not rep.failed
    assert srv.ranges(path)[-1] == "bytes=150000-"
    np.testing.assert_array_equal(TileStore(home).read(A, YEAR).embeddings, data.embeddings)
    assert not list((home / "downloads").rglob("*.part"))
