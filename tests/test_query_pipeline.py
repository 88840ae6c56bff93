"""One query pipeline: one result type and JSON schema in every mode, replay reproduces
examples and results, the library prints nothing, and the table shows the top rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _helpers import NAIROBI_TILES, small_tile

import tessera_search as ts
from tessera_search.grid import Tile, pixel_to_lonlat
from tessera_search.index import build_index
from tessera_search.store import TileStore


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    home = tmp_path_factory.mktemp("pipeline-ws")
    ws = ts.Workspace(home)
    for name in NAIROBI_TILES[:2]:
        ws.put(small_tile(name, height=48, width=56))
    build_index(tiles=NAIROBI_TILES[:2], year=2023, home=home, name="pipe", progress=False)
    return home


def _pt(home, row=20, col=30, tile=NAIROBI_TILES[0]) -> str:
    lon, lat = pixel_to_lonlat(TileStore(home).grid(Tile.from_name(tile), 2023), row, col)
    return f"{float(lon)},{float(lat)}"


MODES = [
    [],
    ["--threshold", "0.9", "--max-results", "300"],
    ["--min-separation", "50"],
    ["--group"],
    ["--point", "P2", "--negative", "N"],
]


def test_one_json_schema_in_every_mode(ws, cli):
    keys, match_keys = None, None
    for extra in MODES:
        extra = [_pt(ws, 10, 40) if a == "P2" else _pt(ws, 30, 10, NAIROBI_TILES[1]) if a == "N" else a for a in extra]
        code, out, err = cli("--home", ws, "query", "--point", _pt(ws), "--k", "25", "--index", "pipe", *extra, "--json")
        assert code == 0, (extra, err)
        doc = json.loads(out)
        if keys is None:
            keys, match_keys = set(doc), set(doc["matches"][0])
            qkeys = set(doc["query"])
        assert set(doc) == keys, extra
        assert set(doc["query"]) == qkeys == {"example_year", "push", "positives", "negatives", "dropped"}
        assert set(doc["matches"][0]) == match_keys
        assert doc["query"]["example_year"] == 2023 and doc["query"]["positives"]
        assert (doc["blobs"] is not None) == ("--group" in extra)


def test_replay_of_a_plain_query_reproduces_its_examples_and_results(ws, cli):
    code, out, _ = cli("--home", ws, "query", "--point", _pt(ws), "--k", "30", "--index", "pipe", "--json")
    first = json.loads(out)
    assert first["query"]["positives"][0]["tile"] == NAIROBI_TILES[0]
    code, out, err = cli("--home", ws, "query", "--replay", str(first["query_id"]), "--json")
    assert code == 0, err
    again = json.loads(out)
    assert again["query"] == first["query"] and again["query"]["example_year"] == 2023
    assert again["params"] == first["params"]
    assert again["matches"] == first["matches"]


def test_replay_of_an_example_query_reproduces_it(ws):
    res = ts.run_query([_pt(ws), _pt(ws, 5, 5)], negatives=[_pt(ws, 30, 10, NAIROBI_TILES[1])], k=40,
                       min_separation=30, index="pipe", home=ws)
    again = ts.replay(res.query_id, home=ws)
    assert again.query == res.query and len(res.query["negatives"]) == 1
    np.testing.assert_array_equal(again.ids, res.ids)
    np.testing.assert_array_equal(again.similarity, res.similarity)
    np.testing.assert_array_equal(again.vector, res.vector)


def test_the_public_api_prints_nothing(ws, tmp_path, capfd):
    res, files = ts.run_query(_pt(ws), k=2000, threshold=0.2, max_results=100, index="pipe", home=ws,
                              then=lambda r, idx: ts.write_result(r, idx, tmp_path / "m.tif"))
    assert res.truncated and any("max_results=100" in w for w in res.warnings)
    ts.replay(res.query_id, home=ws)
    ts.history(ws)
    ts.list_indexes(ws)
    ts.workspace_info(ws)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert all(f.exists() for f in files) and len(files) == 2


def test_table_shows_the_top_20_and_says_how_many_more(ws, cli, tmp_path):
    code, out, _ = cli("--home", ws, "query", "--point", _pt(ws), "--k", "50", "--index", "pipe")
    assert code == 0
    assert "30 more matches not shown" in out and "--all" in out
    rows = [line for line in out.splitlines() if line.strip().startswith(("│", "|")) or line[:6].strip().isdigit()]
    code, out_all, _ = cli("--home", ws, "query", "--point", _pt(ws), "--k", "50", "--index", "pipe", "--all")
    assert "not shown" not in out_all and out_all.count("grid_") > out.count("grid_")
    code, out, _ = cli("--home", ws, "query", "--point", _pt(ws), "--k", "50", "--index", "pipe",
                       "--out", tmp_path / "m.csv")
    assert f"all of them are in {tmp_path / 'm.csv'}" in out.replace("\n", "") or "all of them are in" in out
    assert rows


def test_threshold_truncation_is_said_once(ws, cli):
    code, out, err = cli("--home", ws, "query", "--point", _pt(ws), "--threshold", "0.0", "--max-results", "50",
                         "--index", "pipe")
    assert code == 0
    assert (out + err).count("stopped at --max-results 50") == 1 and "max_results" not in out + err


def test_exported_names_are_what_they_claim_and_documented():
    import types
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    for name in ts.__all__:
        obj = getattr(ts, name)
        assert not isinstance(obj, types.ModuleType), name
        if name.startswith("__"):
            continue
        assert f"`{name}`" in doc, f"{name} is exported but not in docs/api.md"
    import re

    documented = set(re.findall(r"^\| `(\w+)`", doc, flags=re.M))
    assert documented == {n for n in ts.__all__ if not n.startswith("__")}
    # a submodule import never shadows a public function
    import tessera_search.query  # noqa: F401

    assert callable(ts.run_query) and not isinstance(ts.replay, types.ModuleType)


def test_indexes_and_history_never_cut_the_name_to_copy(ws, cli, monkeypatch):
    long = "a-rather-long-index-name-for-the-nairobi-area-2023"
    build_index(tiles=NAIROBI_TILES[:1], year=2023, home=ws, name=long, progress=False)
    cli("--home", ws, "query", "--point", _pt(ws), "--k", "5", "--index", long)
    monkeypatch.setenv("COLUMNS", "70")  # a narrow terminal
    for cmd in ("indexes", "history"):
        code, out, _ = cli("--home", ws, cmd)
        assert code == 0 and long in out, (cmd, out)
