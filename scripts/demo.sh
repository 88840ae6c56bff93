#!/usr/bin/env bash
# The main job on built-in defaults, offline: synthesize the Nairobi area, ingest it,
# build an index, query by example, and summarise. Outputs land in demo-out/ and the
# workspace in indexes/ (the default home, so a plain `tessera-search serve` afterwards
# shows the demo index on a map; nothing outside the repository is touched).
set -euo pipefail
. "$(dirname "$0")/_venv.sh" "serve"
OUT=demo-out
BBOX=36.7,-1.4,36.9,-1.2
export TESSERA_SEARCH_HOME="$PWD/indexes"
mkdir -p "$OUT"
echo "== 1. synthesize a SYNTHETIC release mirror of the Nairobi area (4 tiles, 2023)"
tessera-search synthesize --bbox "$BBOX" --year 2023 --out "$OUT/mirror"
echo "== 2. ingest it into the local store"
tessera-search download --bbox "$BBOX" --year 2023 --source "$OUT/mirror"
echo "== 3. build a sharded index (int8 lists: the store's rows in list order, scanned exactly)"
tessera-search build-index --bbox "$BBOX" --year 2023 --source "$OUT/mirror" --name nairobi-2023
echo "== 4. query by example: the 1000 pixels most like the one at 36.8,-1.3"
tessera-search query --index nairobi-2023 --point 36.8,-1.3 --k 1000 --json --out "$OUT/matches.geojson" > "$OUT/matches.json"
python - "$OUT/matches.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["matches"]
print(f"{len(m)} matches from index {r['index']}; best: {m[0]['tile']} row {m[0]['row']} col {m[0]['col']} "
      f"(similarity {m[0]['similarity']:.4f}); 1000th similarity {m[-1]['similarity']:.4f}")
PY
echo "== 5. 200 places like it, at least 100 m apart, as a COG mask with a PNG quicklook"
tessera-search query --index nairobi-2023 --point 36.8,-1.3 --k 200 --min-separation 100 --out "$OUT/places.tif" > /dev/null
echo "== 6. workspace summary"
tessera-search info
echo "outputs: $OUT/matches.json, $OUT/matches.geojson, $OUT/places.tif, $OUT/places.png (workspace: $TESSERA_SEARCH_HOME)"
echo "browse it on a map: .venv/bin/tessera-search serve --open   (http://127.0.0.1:8000; docs/serve.md)"
