/* tessera-search serve: the page. Talks to the JSON API under /api (docs/serve.md). */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const state = {
    config: null, index: null, searchExamples: [], labelExamples: [], classes: [], activeClass: null,
    lastResult: null, lastQueryId: null, drawing: null, job: null, classLayer: null,
  };
  let PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a"];  // replaced by the class maps' own (api/config)
  const mapColours = {};  // class name -> its colour in the last class map

  // ---------------------------------------------------------------- map
  const map = L.map("map", { preferCanvas: true, zoomControl: true, doubleClickZoom: false });
  const canvas = L.canvas({ padding: 0.2 });
  L.control.scale({ imperial: false, position: "bottomleft" }).addTo(map);
  const layers = {
    embeddings: null,
    outlines: L.geoJSON(null, { style: { color: "#333", weight: 1.2, fill: false }, interactive: false }),
    footprint: L.layerGroup(),
    results: L.layerGroup(),
    examples: L.layerGroup(),
    suggestions: L.layerGroup(),
    basemap: null,
  };
  const control = L.control.layers(null, null, { collapsed: false, position: "topleft" }).addTo(map);
  layers.outlines.addTo(map);
  layers.results.addTo(map);
  layers.examples.addTo(map);
  layers.suggestions.addTo(map);
  control.addOverlay(layers.outlines, "country outlines (Natural Earth)");
  control.addOverlay(layers.footprint, "index tiles");
  control.addOverlay(layers.results, "search results");
  control.addOverlay(layers.examples, "examples");
  control.addOverlay(layers.suggestions, "suggestions");

  map.on("mousemove", (e) => {
    $("coords").textContent = `${e.latlng.lng.toFixed(6)}, ${e.latlng.lat.toFixed(6)}  z${map.getZoom()}`;
  });

  // ---------------------------------------------------------------- API
  async function api(method, path, body) {
    const opts = { method, headers: {} };
    if (body !== undefined) { opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
    const r = await fetch(path, opts);
    const text = r.status === 204 ? "" : await r.text();
    const doc = text ? parseJSON(text) : null;
    if (!r.ok) {
      const err = new Error(doc && doc.message ? doc.message : `HTTP ${r.status}`);
      err.name = (doc && doc.error) || "HTTPError";
      throw err;
    }
    return { doc, text, elapsed: r.headers.get("X-Elapsed-Seconds") };
  }
  // Pixel IDs are 64-bit: beyond 2^53 a JavaScript number loses digits, so integers of 16 or
  // more digits are kept as text (the raw answer stays in state.lastResultText).
  function parseJSON(text) {
    return JSON.parse(text.replace(/([:\[,]\s*)(-?\d{16,})(?=\s*[,}\]])/g, '$1"$2"'));
  }
  function showError(err) {
    const box = $("error");
    if (!err) { box.hidden = true; box.textContent = ""; return; }
    box.hidden = false;
    box.innerHTML = "";
    const b = document.createElement("b");
    b.textContent = err.name || "Error";
    box.append(b, document.createTextNode(err.message || String(err)));
  }
  function num(id) { const v = $(id).value.trim(); return v === "" ? null : Number(v); }

  // ---------------------------------------------------------------- indexes
  async function loadConfig() {
    const { doc } = await api("GET", "/api/config");
    state.config = doc;
    if (doc.palette && doc.palette.length) PALETTE = doc.palette;
    const years = doc.years;
    $("year").innerHTML = years.map((y) => `<option>${y}</option>`).join("");
    const exampleYears = doc.store_years && doc.store_years.length ? doc.store_years : years;  // any stored year
    $("example-year").innerHTML = `<option value="">the index's</option>` + exampleYears.map((y) => `<option>${y}</option>`).join("");
    if (doc.basemap) {
      layers.basemap = L.tileLayer(doc.basemap, { maxZoom: 19, zIndex: 0, attribution: "basemap: " + doc.basemap });
      control.addOverlay(layers.basemap, "basemap (--basemap; needs a network)");
    }
    const first = doc.indexes.find((i) => i.name === doc.index) || doc.indexes[0];
    if (!first) { showError({ name: "IndexNotFoundError", message: "no index is built in this workspace yet; run tessera-search build-index" }); return; }
    $("year").value = String(first.year);
    fillIndexes(first.year, first.name);
    selectIndex(first.name, true);
  }
  function fillIndexes(year, selected) {
    const names = state.config.indexes.filter((i) => String(i.year) === String(year));
    $("index").innerHTML = names.map((i) => `<option value="${i.name}">${i.name}</option>`).join("");
    if (selected) $("index").value = selected;
  }
  function selectIndex(name, fit) {
    const info = state.config.indexes.find((i) => i.name === name);
    if (!info) return;
    state.index = info;
    $("synthetic").hidden = !info.synthetic;
    if (layers.embeddings) { control.removeLayer(layers.embeddings); map.removeLayer(layers.embeddings); }
    layers.embeddings = L.tileLayer(`/api/tiles/embeddings/${encodeURIComponent(name)}/{z}/{x}/{y}.png`, {
      minZoom: 9, maxZoom: 20, maxNativeZoom: 20, opacity: 1, className: "embeddings", zIndex: 2,
      attribution: "TESSERA embeddings, PCA false colour" + (info.synthetic ? " (SYNTHETIC)" : "") +
        " | outlines: Natural Earth",
    }).addTo(map);
    control.addOverlay(layers.embeddings, "embeddings (PCA false colour)");
    layers.footprint.clearLayers();
    for (const [w, s] of info.cells) {
      L.rectangle([[s, w], [s + 0.1, w + 0.1]], { color: "#555", weight: 1, fill: false, dashArray: "3 3",
        interactive: false, renderer: canvas }).addTo(layers.footprint);
    }
    const [w, s, e, n] = info.bounds;
    if (fit) map.fitBounds([[s, w], [n, e]]);
    if (map.getZoom() < 9) layers.footprint.addTo(map);  // the colours show from zoom 9: show where to zoom
    const m = 2;
    api("GET", `/api/outlines?bbox=${Math.max(-180, w - m)},${Math.max(-90, s - m)},${Math.min(180, e + m)},${Math.min(90, n + m)}`)
      .then(({ doc }) => { layers.outlines.clearLayers(); layers.outlines.addData(doc); })
      .catch(showError);
  }
  $("year").addEventListener("change", () => { fillIndexes($("year").value); selectIndex($("index").value, true); });
  $("index").addEventListener("change", () => selectIndex($("index").value, true));

  // ---------------------------------------------------------------- tabs
  let tab = "search";
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => {
    tab = b.dataset.tab;
    document.querySelectorAll("#tabs button").forEach((x) => x.classList.toggle("active", x === b));
    document.querySelectorAll(".tab").forEach((s) => { s.hidden = s.id !== "tab-" + tab; });
    if (tab === "history") loadHistory();
    if (tab === "files") loadFiles();
  }));

  // ---------------------------------------------------------------- drawing
  function startDrawing(button, done) {
    if (state.drawing) { finishDrawing(false); return; }
    state.drawing = { points: [], line: L.polyline([], { color: "#ff7800", renderer: canvas }).addTo(map), done, button };
    button.classList.add("drawing");
  }
  function finishDrawing(keep) {
    const d = state.drawing;
    state.drawing = null;
    d.button.classList.remove("drawing");
    map.removeLayer(d.line);
    if (keep && d.points.length >= 3) d.done(d.points.map((p) => [p.lng, p.lat]));
  }
  map.on("dblclick", () => { if (state.drawing) finishDrawing(true); });

  map.on("click", (e) => {
    if (state.drawing) { state.drawing.points.push(e.latlng); state.drawing.line.setLatLngs(state.drawing.points); return; }
    const pt = [e.latlng.lng, e.latlng.lat];
    if (tab === "label") { addLabelExample({ type: "Point", coordinates: pt }); return; }
    const positive = !(e.originalEvent.shiftKey || $("negative").checked);
    addSearchExample({ type: "Point", coordinates: pt }, positive);
    if ($("auto").checked) runSearch();
  });

  // ---------------------------------------------------------------- search
  function feature(geometry, props) { return { type: "Feature", geometry, properties: props }; }
  function drawExample(f, colour) {
    const g = f.geometry;
    if (g.type === "Point") {
      return L.circleMarker([g.coordinates[1], g.coordinates[0]], { radius: 6, color: "#000", weight: 2,
        fillColor: colour, fillOpacity: 1, renderer: canvas, interactive: false }).addTo(layers.examples);
    }
    return L.polygon(g.coordinates[0].map((c) => [c[1], c[0]]), { color: colour, weight: 2, fillOpacity: 0.15,
      renderer: canvas, interactive: false }).addTo(layers.examples);
  }
  function addSearchExample(geometry, positive) {
    const f = feature(geometry, { positive });
    f._layer = drawExample(f, positive ? "#00e5ff" : "#ff1744");
    state.searchExamples.push(f);
    renderExampleList();
  }
  function renderExampleList() {
    $("examples").innerHTML = "";
    state.searchExamples.forEach((f, i) => {
      const li = document.createElement("li");
      const g = f.geometry;
      const where = g.type === "Point" ? `${g.coordinates[0].toFixed(5)}, ${g.coordinates[1].toFixed(5)}` : `polygon (${g.coordinates[0].length - 1} corners)`;
      li.innerHTML = `<span>${f.properties.positive ? "+" : "\u2212"} ${where}</span>`;
      const x = document.createElement("button");
      x.textContent = "\u00d7";
      x.addEventListener("click", () => { layers.examples.removeLayer(f._layer); state.searchExamples.splice(i, 1); renderExampleList(); });
      li.append(x);
      $("examples").append(li);
    });
  }
  $("draw-search").addEventListener("click", (e) => startDrawing(e.target, (ring) => {
    addSearchExample({ type: "Polygon", coordinates: [ring.concat([ring[0]])] }, !$("negative").checked);
    if ($("auto").checked) runSearch();
  }));
  $("clear-search").addEventListener("click", () => {
    state.searchExamples.forEach((f) => layers.examples.removeLayer(f._layer));
    state.searchExamples = [];
    layers.results.clearLayers();
    $("results").innerHTML = "";
    renderExampleList();
  });
  $("run-search").addEventListener("click", () => runSearch());

  let searchSeq = 0;
  async function runSearch() {
    if (!state.searchExamples.length || !state.index) return;
    const seq = ++searchSeq;
    const body = {
      index: state.index.name,
      examples: state.searchExamples.map((f) => ({ type: "Feature", geometry: f.geometry, properties: f.properties })),
      k: num("k") || 10, threshold: num("threshold"), min_separation: num("min-separation"),
      group: $("group").checked, example_year: num("example-year"),
    };
    $("search-status").textContent = "searching\u2026";
    showError(null);
    const t0 = performance.now();
    try {
      const { doc, text, elapsed } = await api("POST", "/api/query", body);
      if (seq !== searchSeq) return;
      const ms = performance.now() - t0;
      showResult(doc, text, elapsed, ms);
    } catch (err) {
      if (seq === searchSeq) { $("search-status").textContent = ""; showError(err); }
    }
  }
  function simColour(t) {  // 0..1 -> yellow to red
    const r = 255, g = Math.round(230 * (1 - t) + 20 * t), b = Math.round(60 * (1 - t));
    return `rgb(${r},${g},${b})`;
  }
  function showResult(doc, text, elapsed, ms) {
    state.lastResult = doc;
    state.lastResultText = text;
    state.lastQueryId = doc.query_id;
    layers.results.clearLayers();
    if (state.note) { state.note.remove(); state.note = null; }
    const list = $("results");
    list.innerHTML = "";
    const sims = doc.matches.map((m) => m.similarity);
    const lo = Math.min(...sims), hi = Math.max(...sims);
    const scale = (s) => (hi > lo ? (s - lo) / (hi - lo) : 1);
    const MAX_MARKERS = 20000, MAX_ROWS = 1000;  // a threshold search may return 100,000 pixels
    for (const m of doc.matches.slice(0, MAX_MARKERS)) {
      L.circleMarker([m.lat, m.lon], { radius: 4, weight: 1, color: "#222", fillColor: simColour(scale(m.similarity)),
        fillOpacity: 0.95, renderer: canvas }).bindTooltip(`#${m.rank} ${m.similarity.toFixed(4)}`).addTo(layers.results);
    }
    const rows = doc.blobs || doc.matches;
    rows.slice(0, MAX_ROWS).forEach((m) => {
      const li = document.createElement("li");
      li.className = doc.blobs ? "blob" : "match";
      if (doc.blobs) {
        li.innerHTML = `<span class="sim" style="background:${simColour(scale(m.max_similarity))}"></span>` +
          `${m.n_pixels} px, ${(m.area_m2 / 1e4).toFixed(2)} ha, mean ${m.mean_similarity.toFixed(4)}`;
      } else {
        Object.assign(li.dataset, { rank: m.rank, id: String(m.id), tile: m.tile, row: m.row, col: m.col, similarity: String(m.similarity) });
        li.innerHTML = `<span class="sim" style="background:${simColour(scale(m.similarity))}"></span>` +
          `${m.similarity.toFixed(4)} &nbsp;${m.tile} r${m.row} c${m.col}`;
      }
      li.addEventListener("click", () => map.setView([m.lat, m.lon], Math.max(map.getZoom(), 16)));
      list.append(li);
    });
    if (rows.length > MAX_ROWS || doc.matches.length > MAX_MARKERS) {
      const note = document.createElement("p");
      note.className = "hint";
      note.textContent = `showing the first ${Math.min(rows.length, MAX_ROWS)} rows and ` +
        `${Math.min(doc.matches.length, MAX_MARKERS)} points; export for all of them`;
      list.after(note);
      state.note = note;
    }
    const server = elapsed ? `${(Number(elapsed) * 1000).toFixed(0)} ms on the server, ` : "";
    $("search-status").textContent = `${doc.count} matches in ${server}${ms.toFixed(0)} ms in all` +
      (doc.truncated ? " (truncated)" : "") + (doc.warnings.length ? " \u2014 " + doc.warnings.join("; ") : "");
    $("search-status").dataset.done = String(Date.now());
    document.body.dataset.results = String(doc.count);
  }

  // ---------------------------------------------------------------- jobs
  async function runJob(path, body, onDone) {
    showError(null);
    let job;
    try { job = (await api("POST", path, body)).doc; } catch (err) { showError(err); return; }
    state.job = job.id;
    $("job").hidden = false;
    $("job-cancel").hidden = false;
    while (true) {
      const { doc } = await api("GET", `/api/jobs/${job.id}`);
      $("job-text").textContent = `${doc.kind}: ${doc.state}${doc.stage ? " (" + doc.stage + ")" : ""}` +
        (doc.total ? ` ${doc.done}/${doc.total}` : "") + (doc.seconds != null ? `, ${doc.seconds.toFixed(1)} s` : "");
      $("job-progress").value = doc.total ? doc.done / doc.total : 0;
      if (!["queued", "running"].includes(doc.state)) {
        state.job = null;
        $("job").hidden = doc.state === "done";  // an error or a cancel stays in view
        $("job-cancel").hidden = true;
        if (doc.state === "done") onDone(doc.result, doc);
        else if (doc.state === "error") showError({ name: doc.error.error, message: doc.error.message });
        return;
      }
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  $("job-cancel").addEventListener("click", () => { if (state.job) api("DELETE", `/api/jobs/${state.job}`).catch(showError); });

  function download(files) {
    const box = $("search-status");
    box.innerHTML = "exported: " + files.map((f) => `<a href="${f.url}" download>${f.name}</a>`).join(", ");
  }
  document.querySelectorAll(".exports button").forEach((b) => b.addEventListener("click", () => {
    if (state.lastQueryId == null) { showError({ name: "InvalidInputError", message: "search first: exports write the last recorded query" }); return; }
    runJob("/api/export", { query_id: state.lastQueryId, format: b.dataset.format }, (res) => download(res.files));
  }));

  // ---------------------------------------------------------------- label
  function renderPalette() {
    renderLabelExamples();
    const ul = $("palette");
    ul.innerHTML = "";
    state.classes.forEach((c, i) => {
      const li = document.createElement("li");
      li.classList.toggle("active", c === state.activeClass);
      const n = state.labelExamples.filter((f) => f.properties.class === c).length;
      li.innerHTML = `<span class="swatch" style="background:${classColour(c)}"></span> ${c} <small>(${n})</small>`;
      li.addEventListener("click", () => { state.activeClass = c; renderPalette(); });
      ul.append(li);
    });
  }
  function renderLabelExamples() {
    const ul = $("label-examples");
    ul.innerHTML = "";
    state.labelExamples.forEach((f, i) => {
      const li = document.createElement("li");
      const g = f.geometry;
      const where = g.type === "Point" ? `${g.coordinates[0].toFixed(5)}, ${g.coordinates[1].toFixed(5)}` : `polygon (${g.coordinates[0].length - 1} corners)`;
      li.innerHTML = `<span><span class="swatch" style="background:${classColour(f.properties.class)}"></span> ${f.properties.class}: ${where}</span>`;
      const x = document.createElement("button");
      x.textContent = "\u00d7";
      x.addEventListener("click", () => { layers.examples.removeLayer(f._layer); state.labelExamples.splice(i, 1); renderPalette(); });
      li.append(x);
      ul.append(li);
    });
  }
  function classColour(c) {  // a class map codes classes in sorted order: colour by that order
    if (mapColours[c]) return mapColours[c];
    const sorted = [...state.classes].sort();
    return PALETTE[Math.max(0, sorted.indexOf(c)) % PALETTE.length];
  }
  $("add-class").addEventListener("click", () => {
    const name = $("new-class").value.trim();
    if (!name || state.classes.includes(name)) return;
    state.classes.push(name);
    state.activeClass = name;
    $("new-class").value = "";
    renderPalette();
  });
  function addLabelExample(geometry) {
    if (!state.activeClass) { showError({ name: "InvalidInputError", message: "add a class first, then click its examples" }); return; }
    const f = feature(geometry, { class: state.activeClass });
    f._layer = drawExample(f, classColour(state.activeClass));
    state.labelExamples.push(f);
    renderPalette();
  }
  $("draw-label").addEventListener("click", (e) => startDrawing(e.target, (ring) => addLabelExample({ type: "Polygon", coordinates: [ring.concat([ring[0]])] })));
  $("clear-label").addEventListener("click", () => {
    state.labelExamples.forEach((f) => layers.examples.removeLayer(f._layer));
    state.labelExamples = [];
    layers.suggestions.clearLayers();
    renderPalette();
  });
  function labelBody() {
    const b = map.getBounds();
    return {
      index: state.index.name, scope: $("scope").value, bbox: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()],
      examples: state.labelExamples.map((f) => ({ type: "Feature", geometry: f.geometry, properties: f.properties })),
      k: num("label-k") || 5, weights: $("weights").value, cv: num("cv"), block_size: num("block-size"),
    };
  }
  $("run-label").addEventListener("click", () => runJob("/api/label", labelBody(), showClassMap));
  $("run-suggest").addEventListener("click", () => runJob("/api/suggest", labelBody(), showSuggestions));

  function showClassMap(res) {
    const doc = res.map || res;
    if (state.classLayer) { control.removeLayer(state.classLayer); map.removeLayer(state.classLayer); }
    state.classLayer = L.tileLayer(doc.file.tiles, { maxZoom: 20, opacity: 0.75, zIndex: 3 }).addTo(map);
    control.addOverlay(state.classLayer, "class map");
    for (const [code, name] of Object.entries(doc.legend)) mapColours[name] = doc.legend_colours[code];
    renderPalette();
    const legend = $("legend");
    legend.hidden = false;
    legend.innerHTML = `<div class="title">class map (k=${doc.k}, ${doc.weights})</div>` +
      Object.entries(doc.legend).map(([code, name]) =>
        `<div><span class="swatch" style="background:${doc.legend_colours[code]}"></span> ${name}: ${(doc.pixels[name] || 0).toLocaleString()} px</div>`).join("");
    let html = `<p>${doc.n_pixels.toLocaleString()} pixels classified in ${doc.seconds.toFixed(1)} s ` +
      `\u2014 <a href="${doc.file.url}" download>${doc.file.name}</a> (COG)</p>`;
    if (res.cv) {
      const cv = res.cv;
      html += `<p>${cv.folds}-fold spatially blocked CV: accuracy <b>${(100 * cv.accuracy).toFixed(1)}%</b>, macro-F1 ${cv.macro_f1.toFixed(3)}</p>`;
    }
    $("label-report").innerHTML = html;
    document.body.dataset.classmap = doc.file.name;
  }
  function showSuggestions(res) {
    layers.suggestions.clearLayers();
    for (const p of res.suggestions) {
      L.circleMarker([p.lat, p.lon], { radius: 7, color: "#ff9800", weight: 3, fill: false, renderer: canvas })
        .bindTooltip(`label me: ${p.predicted} or ${p.second}? (margin ${p.margin.toFixed(3)})`)
        .addTo(layers.suggestions);
    }
    $("label-report").innerHTML = `<p>${res.n} places to label next (orange rings) \u2014 <a href="${res.file.url}" download>${res.file.name}</a></p>`;
  }

  // ---------------------------------------------------------------- history and files
  async function loadHistory() {
    try {
      const { doc } = await api("GET", "/api/history?limit=50");
      const ol = $("history");
      ol.innerHTML = "";
      for (const q of doc.queries) {
        const li = document.createElement("li");
        li.textContent = `#${q.id} ${q.index} ${q.mode} k=${q.k} \u2192 ${q.n_results} (${q.created_at})`;
        li.title = "replay";
        li.addEventListener("click", async () => {
          try {
            const t0 = performance.now();
            const { doc: res, text, elapsed } = await api("POST", `/api/replay/${q.id}`);
            showResult(res, text, elapsed, performance.now() - t0);
            state.lastQueryId = q.id;
            document.querySelector('#tabs button[data-tab="search"]').click();
          } catch (err) { showError(err); }
        });
        ol.append(li);
      }
    } catch (err) { showError(err); }
  }
  async function loadFiles() {
    try {
      const { doc } = await api("GET", "/api/files");
      $("files").innerHTML = doc.files.map((f) => `<li><a href="${f.url}" download>${f.name}</a> (${(f.bytes / 1024).toFixed(1)} KiB)</li>`).join("");
    } catch (err) { showError(err); }
  }
  $("refresh-history").addEventListener("click", loadHistory);
  $("refresh-files").addEventListener("click", loadFiles);

  window.tessera = { map, state, layers, runSearch, addSearchExample, addLabelExample,
    addClass: (name) => { if (!state.classes.includes(name)) state.classes.push(name); state.activeClass = name; renderPalette(); } };
  loadConfig().catch(showError);
})();
