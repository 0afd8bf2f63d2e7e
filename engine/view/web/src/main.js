// Browser side of `lode view`: OpenSeadragon draws the pyramids; its tiles are the zarr chunks of
// the OME-Zarr store, read by zarrita (zarr v3, sharding, zstd) through HTTP Range requests.
import OpenSeadragon from "openseadragon";
import * as zarr from "zarrita";

const $ = (id) => document.getElementById(id);
// suffix ranges read a shard's index in one request (the server answers `bytes=-N`)
const root = zarr.root(new zarr.FetchStore(new URL("store", location.href).href, { useSuffixRequest: true }));
const arrays = new Map();
const chunks = new Map();
const CHUNK_CACHE = 1024;

function openArray(path) {
  if (!arrays.has(path)) arrays.set(path, zarr.open.v3(root.resolve(path), { kind: "array" }));
  return arrays.get(path);
}

function chunkOf(path, coords) {
  const key = `${path}:${coords.join(",")}`;
  if (!chunks.has(key)) {
    const p = openArray(path).then((a) => a.getChunk(coords));
    p.catch(() => chunks.delete(key));
    chunks.set(key, p);
    if (chunks.size > CHUNK_CACHE) chunks.delete(chunks.keys().next().value);
  }
  return chunks.get(key);
}

// A tile source whose tile (level, x, y) is chunk (y, x) of pyramid level `maxLevel - level`.
function zarrSource(levels, width, height, key, render) {
  const maxLevel = Math.ceil(Math.log2(Math.max(width, height, 2)));
  const at = (level) => levels[Math.min(maxLevel - level, levels.length - 1)];
  return {
    width, height, tileOverlap: 0, maxLevel, minLevel: maxLevel - (levels.length - 1),
    tileWidth: levels[0].chunks.at(-1), tileHeight: levels[0].chunks.at(-2),
    getTileWidth: (level) => at(level).chunks.at(-1),
    getTileHeight: (level) => at(level).chunks.at(-2),
    getTileUrl: (level, x, y) => `${key}/${level}/${x}/${y}`,
    downloadTileStart(job) {
      const t = job.tile;
      const lv = at(t.level);
      const [ch, cw] = lv.chunks.slice(-2);
      const coords = lv.shape.length === 3 ? [0, t.y, t.x] : [t.y, t.x];
      chunkOf(lv.path, coords).then((chunk) => {
        const h = Math.min(ch, lv.shape.at(-2) - t.y * ch);
        const w = Math.min(cw, lv.shape.at(-1) - t.x * cw);
        const canvas = document.createElement("canvas");
        canvas.width = w;
        canvas.height = h;
        const ctx = canvas.getContext("2d");
        const img = ctx.createImageData(w, h);
        render(chunk, img.data, w, h);
        ctx.putImageData(img, 0, 0);
        job.finish(ctx, null, "context2d");
      }).catch((err) => job.fail(`${lv.path} ${coords}: ${err}`));
    },
    downloadTileAbort() {},
  };
}

function byteScale(data) {
  if (data instanceof Uint8Array || data instanceof Uint8ClampedArray) return (v) => v;
  if (data instanceof Uint16Array) return (v) => v >> 8;
  return (v) => Math.max(0, Math.min(255, v * 255));
}

function renderImage(chunk, out, w, h) {
  const { data, shape, stride } = chunk;
  const nc = shape[0];
  const rgb = nc >= 3 ? [0, 1, 2] : [0, 0, 0];
  const s = byteScale(data);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const o = 4 * (y * w + x);
      const base = y * stride[1] + x * stride[2];
      for (let i = 0; i < 3; i++) out[o + i] = s(data[rgb[i] * stride[0] + base]);
      out[o + 3] = 255;
    }
  }
}

function labelRenderer(lut) {
  return (chunk, out, w, h) => {
    const { data, stride } = chunk;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const v = data[y * stride[0] + x * stride[1]];
        out.set(lut.subarray(4 * v, 4 * v + 4), 4 * (y * w + x));
      }
    }
  };
}

function probabilityRenderer(channel, scale) {
  // channel >= 0: that class's probability; -1: uncertainty = 1 - max over classes
  return (chunk, out, w, h) => {
    const { data, shape, stride } = chunk;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const base = y * stride[1] + x * stride[2];
        let p;
        if (channel >= 0) p = data[channel * stride[0] + base] * scale;
        else {
          let m = 0;
          for (let c = 0; c < shape[0]; c++) m = Math.max(m, data[c * stride[0] + base] * scale);
          p = 1 - m;
        }
        const o = 4 * (y * w + x);
        out[o] = 255; out[o + 1] = 0; out[o + 2] = 255;
        out[o + 3] = Math.round(Math.max(0, Math.min(1, p)) * 255);
      }
    }
  };
}

const viewer = OpenSeadragon({
  element: $("viewer"), drawer: "canvas", showNavigationControl: false, blendTime: 0, animationTime: 0.3,
  crossOriginPolicy: false, maxZoomPixelRatio: 8, gestureSettingsMouse: { clickToZoom: false, dblClickToZoom: true }, imageLoaderLimit: 16, preserveImageSizeOnResize: true,
});
const state = { manifest: null, current: null, hidden: new Set(), opacity: 0.6, version: 0, probability: null, seams: null };
const errors = [];
viewer.addHandler("tile-load-failed", (e) => { errors.push(e.message); console.error("tile failed:", e.message); });

function item(name) {
  for (let i = 0; i < viewer.world.getItemCount(); i++) {
    const it = viewer.world.getItemAt(i);
    if (it.lodeName === name) return it;
  }
  return null;
}

function addLayer(name, tileSource, opacity, index) {
  return new Promise((resolve, reject) => {
    const old = item(name);
    viewer.addTiledImage({
      tileSource, opacity, index, x: 0, y: 0, width: 1,
      success: (e) => { e.item.lodeName = name; if (old) viewer.world.removeItem(old); resolve(e.item); },
      error: (e) => reject(new Error(e.message)),
    });
  });
}

function labelLut(classes) {
  const lut = new Uint8ClampedArray(256 * 4);
  for (const c of classes) {
    if (state.hidden.has(c.code)) continue;
    lut.set([...c.color, 255], 4 * c.code);
  }
  return lut;
}

async function showLabels() {
  const s = state.current;
  if (!s.labels) return;
  state.version += 1;
  const src = zarrSource(s.labels.levels, s.width, s.height, `labels-${s.name}-${state.version}`,
    labelRenderer(labelLut(s.labels.classes)));
  await addLayer("labels", src, state.opacity, 1);
}

async function showProbability() {
  const s = state.current;
  const old = item("probability");
  if (state.probability === null || !s.probabilities) {
    if (old) viewer.world.removeItem(old);
    return;
  }
  const p = s.probabilities;
  const src = zarrSource(p.levels, s.width, s.height, `prob-${s.name}-${state.probability}`,
    probabilityRenderer(state.probability, p.scale));
  await addLayer("probability", src, 0.8, viewer.world.getItemCount());
}

async function showSeams() {
  const s = state.current;
  const old = item("seams");
  if (!state.seams || !s.seams) {
    if (old) viewer.world.removeItem(old);
    return;
  }
  await addLayer("seams", { type: "image", url: s.seams.url }, 1, viewer.world.getItemCount());
}

function legend(s) {
  const body = $("classes");
  body.replaceChildren();
  for (const c of s.labels.classes) {
    const tr = document.createElement("tr");
    tr.dataset.code = c.code;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = !state.hidden.has(c.code);
    box.dataset.code = c.code;
    box.addEventListener("change", () => {
      if (box.checked) state.hidden.delete(c.code); else state.hidden.add(c.code);
      state.update = showLabels();
    });
    const sw = `<span class="swatch" style="background: rgb(${c.color.join(",")})"></span>`;
    tr.innerHTML = `<td></td><td>${sw} ${c.name}</td><td class="area" data-value="${c.area_pct}">${c.area_pct.toFixed(2)}</td>`;
    tr.firstChild.appendChild(box);
    body.appendChild(tr);
  }
}

function probabilityChoices(s) {
  $("prob-row").hidden = !s.probabilities;
  if (!s.probabilities) return;
  const sel = $("probability");
  sel.replaceChildren(new Option("none", "none"), new Option("uncertainty (1 − max)", "-1"),
    ...s.probabilities.channels.map((n, i) => new Option(n, String(i))));
  sel.value = state.probability === null ? "none" : String(state.probability);
}

async function openSection(name) {
  const s = state.manifest.sections.find((x) => x.name === name);
  state.current = s;
  for (const b of document.querySelectorAll("#sections button")) b.classList.toggle("current", b.dataset.section === name);
  const opened = new Promise((resolve) => viewer.addOnceHandler("open", resolve));
  viewer.open(zarrSource(s.image.levels, s.width, s.height, `image-${name}`, renderImage));
  await opened;
  viewer.world.getItemAt(0).lodeName = "image";
  $("overlay-controls").hidden = !s.labels;
  $("seams-row").hidden = !s.seams;
  $("flagged").textContent = s.flagged.length ? `flagged frames: ${s.flagged.join(", ")}` : "";
  $("grain").hidden = true;
  if (s.labels) legend(s);
  probabilityChoices(s);
  await showLabels();
  await showProbability();
  await showSeams();
  updateScaleBar();
}

function updateScaleBar() {
  const s = state.current;
  const bar = $("scalebar");
  const base = viewer.world.getItemAt(0);
  const size = s ? s.pixel_size_um : null;
  bar.hidden = !size || !base;
  if (bar.hidden) return;
  const screenPerPixel = base.viewportToImageZoom(viewer.viewport.getZoom(true));
  const umPerScreen = size / screenPerPixel;
  const target = 120 * umPerScreen;
  const p = 10 ** Math.floor(Math.log10(target));
  const nice = [5, 2, 1].map((m) => m * p).find((v) => v <= target);
  $("scalebar-bar").style.width = `${nice / umPerScreen}px`;
  const text = nice >= 1000 ? `${nice / 1000} mm` : `${nice} µm`;
  $("scalebar-text").textContent = text;
  bar.dataset.um = String(nice);
  bar.dataset.px = String(nice / umPerScreen);
}

function fmt(v) {
  return typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : String(v);
}

async function showGrain(x, y) {
  const s = state.current;
  const r = await fetch(`api/grain?section=${encodeURIComponent(s.name)}&x=${Math.floor(x)}&y=${Math.floor(y)}`);
  const { grain: g, table } = await r.json();
  const panel = $("grain");
  const dl = $("grain-fields");
  dl.replaceChildren();
  panel.hidden = false;
  if (!g) {
    panel.dataset.grainId = "";
    dl.innerHTML = table ? "<dt>no grain here</dt><dd></dd>"
      : "<dt>no grains.parquet beside the store</dt><dd>run <code>lode analyze</code></dd>";
    return;
  }
  panel.dataset.grainId = String(g.grain_id);
  panel.dataset.areaPx = String(g.area_px);
  const rows = [["id", g.grain_id], ["mineral", g.class_name], ["area", g.area_um2 != null ? `${fmt(g.area_um2)} µm²` : `${g.area_px} px`],
    ["area px", g.area_px], ["ECD", g.ecd_um != null ? `${fmt(g.ecd_um)} µm` : `${fmt(g.ecd_px)} px`],
    ["perimeter", g.perimeter_um != null ? `${fmt(g.perimeter_um)} µm` : `${fmt(g.perimeter_px)} px`],
    ["neighbours", g.neighbours.join(", ") || "none"]];
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = fmt(v);
    dd.dataset.field = k;
    dl.append(dt, dd);
  }
}

viewer.addHandler("canvas-click", (e) => {
  if (!e.quick || !state.current || !state.current.labels) return;
  const p = viewer.world.getItemAt(0).viewerElementToImageCoordinates(e.position);
  showGrain(p.x, p.y);
});
viewer.addHandler("animation", updateScaleBar);

function svgOverlay(layer) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${layer.width} ${layer.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.id = "vectors";
  for (const line of layer.lines) {
    const pl = document.createElementNS(NS, "polyline");
    pl.setAttribute("points", line.map(([x, y]) => `${x},${y}`).join(" "));
    pl.setAttribute("fill", "none");
    pl.setAttribute("stroke", "#ff0000");
    pl.setAttribute("stroke-width", "3");
    pl.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(pl);
  }
  const r = Math.max(layer.width, layer.height) / 120;
  for (const pt of layer.points) {
    const c = document.createElementNS(NS, "circle");
    c.setAttribute("cx", pt.x);
    c.setAttribute("cy", pt.y);
    c.setAttribute("r", r);
    c.setAttribute("fill", "none");
    c.setAttribute("stroke", "#00ffff");
    c.setAttribute("stroke-width", "3");
    c.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(c);
  }
  return svg;
}

async function openLayer(index) {
  const layer = state.manifest.layers[index];
  state.current = { ...layer, pixel_size_um: null };
  for (const b of document.querySelectorAll("#sections button")) b.classList.toggle("current", b.dataset.section === layer.name);
  const opened = new Promise((resolve) => viewer.addOnceHandler("open", resolve));
  viewer.open({ type: "image", url: `api/layer/${index}.png` });
  await opened;
  viewer.world.getItemAt(0).lodeName = "image";
  viewer.clearOverlays();
  if (layer.lines.length || layer.points.length) {
    const rect = viewer.world.getItemAt(0).imageToViewportRectangle(0, 0, layer.width, layer.height);
    viewer.addOverlay({ element: svgOverlay(layer), location: rect });
  }
  $("status").textContent = `${layer.width}×${layer.height} cells of ${layer.cell_size} m` +
    (layer.crs ? `, ${layer.crs}` : "") + `; ${layer.lines.length} lines, ${layer.points.length} deposits`;
}

function frames(n) {
  return new Promise((resolve) => {
    const step = (k) => (k ? requestAnimationFrame(() => step(k - 1)) : resolve());
    step(n);
  });
}

async function idle() {
  viewer.forceRedraw();
  await frames(2);  // let the viewer schedule the tiles of a viewport just set
  return new Promise((resolve) => {
    const check = () => {
      const n = viewer.world.getItemCount();
      let done = n > 0;
      for (let i = 0; i < n; i++) done = done && viewer.world.getItemAt(i).getFullyLoaded();
      if (done) requestAnimationFrame(() => requestAnimationFrame(() => resolve(true)));
      else {
        viewer.forceRedraw();
        setTimeout(check, 20);
      }
    };
    check();
  });
}

function toPage(x, y) {
  const p = viewer.world.getItemAt(0).imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
  const r = viewer.element.getBoundingClientRect();
  return { x: r.left + p.x, y: r.top + p.y };
}

function showImageRect(x, y, w, h) {
  viewer.viewport.fitBounds(viewer.world.getItemAt(0).imageToViewportRectangle(x, y, w, h), true);
  updateScaleBar();
}

async function main() {
  const manifest = await (await fetch("api/manifest.json")).json();
  state.manifest = manifest;
  $("title").textContent = manifest.title;
  const survey = manifest.kind === "survey";
  $("list-title").textContent = survey ? "Layers" : "Sections";
  const list = survey ? manifest.layers : manifest.sections;
  for (const [i, s] of list.entries()) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.textContent = s.name;
    b.dataset.section = s.name;
    b.addEventListener("click", () => (survey ? openLayer(i) : openSection(s.name)));
    li.appendChild(b);
    $("sections").appendChild(li);
  }
  $("opacity").addEventListener("input", (e) => {
    state.opacity = Number(e.target.value);
    const it = item("labels");
    if (it) it.setOpacity(state.opacity);
  });
  $("probability").addEventListener("change", (e) => {
    state.probability = e.target.value === "none" ? null : Number(e.target.value);
    state.update = showProbability();
  });
  $("seams").addEventListener("change", (e) => { state.seams = e.target.checked; showSeams(); });
  if (survey) await openLayer(0);
  else await openSection(list[0].name);
}

const ready = main();
ready.catch((err) => console.error("viewer failed:", err));
window.lode = {
  viewer, state, ready, errors, idle, toPage, showImageRect, openSection, openLayer,
  setOpacity(v) { const el = $("opacity"); el.value = String(v); el.dispatchEvent(new Event("input")); },
  layer: item,
};
