// The panels of one media key: images (a step slider, several images per step side by
// side, captions), histograms over steps (heatmap.js), tables (sorted, filtered and paged
// by the server, images in cells), audio and video.
//
// Safety: a blob is only ever the src of an <img>, <audio> or <video> whose format is one
// of the formats below, or a download link; nothing read from a blob becomes HTML (the
// server also serves blobs with nosniff and a sandboxing CSP, docs/api.md).

import { blobUrl, getHistograms, getMedia, getTable } from "./api.js";
import { h, replace, setText } from "./dom.js";
import { fmtBytes, fmtNumber, fmtValue } from "./format.js";
import { binAt, drawHeatmap } from "./heatmap.js";

const IMAGE_FORMATS = new Set(["png", "jpeg", "jpg", "gif", "webp"]);
const AUDIO_FORMATS = new Set(["wav", "mp3", "ogg"]);
const VIDEO_FORMATS = new Set(["mp4", "webm"]);
const TABLE_PAGE = 20;
const FILTER_DELAY_MS = 250;
// A live table value may reach the page before the server's tables hold it.
const TABLE_RETRIES = 10;
const TABLE_RETRY_MS = 500;

/** A download link to a blob: the browser saves it, it never opens in the page. */
export function blobLink(sha256, name, text = name) {
  return h(
    "a",
    { class: "blob-link", href: blobUrl(sha256), download: name || sha256, rel: "noopener" },
    text,
  );
}

/** The element that shows one media value: a player for known formats, else a link. */
export function mediaElement(value) {
  const format = String(value.format || "").toLowerCase();
  const size = value.width && value.height ? `${value.width}×${value.height}` : "";
  if (value.kind === "image" && IMAGE_FORMATS.has(format)) {
    return h("img", {
      class: "media-image",
      src: blobUrl(value.sha256),
      alt: value.caption || "",
      title: [value.caption, size].filter(Boolean).join(" · "),
      width: value.width || undefined,
      height: value.height || undefined,
      loading: "lazy",
      dataset: { sha256: value.sha256 },
    });
  }
  if (value.kind === "audio" && AUDIO_FORMATS.has(format)) {
    return h("audio", { controls: true, preload: "none", src: blobUrl(value.sha256) });
  }
  if (value.kind === "video" && VIDEO_FORMATS.has(format)) {
    return h("video", { controls: true, preload: "none", src: blobUrl(value.sha256) });
  }
  const name = `${value.kind || "file"}-${String(value.sha256).slice(0, 12)}.${format || "bin"}`;
  return blobLink(value.sha256, name, `${name} (${fmtBytes(value.size)})`);
}

/** A table cell: an image value as an image, anything else as text. */
function cell(value) {
  if (value && typeof value === "object" && !Array.isArray(value) && value._type === "image") {
    return mediaElement({ ...value, kind: "image" });
  }
  return fmtValue(value);
}

function head(key, kind) {
  const note = h("span", { class: "chart-note" });
  const node = h(
    "div",
    { class: "media-panel", dataset: { key, kind } },
    h("div", { class: "chart-head" }, h("span", { class: "chart-title" }, key), note),
  );
  return { node, note };
}

/** Images (or audio, video) of one key, a step at a time. */
export class StepPanel {
  constructor(parent, runId, key, kind) {
    this.runId = runId;
    this.key = key;
    this.kind = kind;
    this.byStep = new Map();
    this.steps = [];
    this.index = -1;
    const { node, note } = head(key, kind);
    this.node = node;
    this.note = note;
    this.slider = h("input", {
      type: "range",
      class: "step-slider",
      min: 0,
      max: 0,
      value: 0,
      "aria-label": `step of ${key}`,
      oninput: () => this.show(Number(this.slider.value)),
    });
    this.stepLabel = h("span", { class: "step-label" });
    this.items = h("div", { class: "media-items" });
    node.append(h("div", { class: "step-row" }, this.slider, this.stepLabel), this.items);
    parent.append(node);
  }

  async load(signal) {
    this.add(await getMedia(this.runId, this.key, {}, signal));
  }

  /** Add values ({step, idx, ...}); the panel follows the newest step unless moved back. */
  add(values) {
    const following = this.index === this.steps.length - 1;
    for (const value of values) {
      const list = (this.byStep.get(value.step) || []).filter((v) => v.idx !== value.idx);
      list.push(value);
      list.sort((a, b) => a.idx - b.idx);
      this.byStep.set(value.step, list);
    }
    const current = this.steps[this.index];
    this.steps = [...this.byStep.keys()].sort((a, b) => a - b);
    this.slider.max = String(Math.max(this.steps.length - 1, 0));
    this.slider.disabled = this.steps.length < 2;
    setText(this.note, `${this.steps.length} step${this.steps.length === 1 ? "" : "s"}`);
    const index = following ? this.steps.length - 1 : this.steps.indexOf(current);
    this.show(index, true);
  }

  show(index, force = false) {
    if (index === this.index && !force) return;
    this.index = index;
    this.slider.value = String(index);
    const step = this.steps[index];
    this.node.dataset.step = step ?? "";
    setText(this.stepLabel, step === undefined ? "" : `step ${fmtNumber(step)}`);
    const values = this.byStep.get(step) || [];
    replace(
      this.items,
      values.map((value) =>
        h(
          "figure",
          { class: "media-item", dataset: { idx: value.idx } },
          mediaElement(value),
          value.caption ? h("figcaption", {}, value.caption) : null,
        ),
      ),
    );
  }
}

/** Histograms of one key over steps, as a heat-map. */
export class HistogramPanel {
  constructor(parent, runId, key) {
    this.runId = runId;
    this.key = key;
    this.rows = new Map();
    const { node, note } = head(key, "histogram");
    this.node = node;
    this.note = note;
    this.canvas = h("canvas", {
      class: "heatmap",
      onmousemove: (event) => this.hover(event),
    });
    this.readout = h("div", { class: "chart-legend heatmap-readout" });
    node.append(this.canvas, this.readout);
    parent.append(node);
  }

  async load(signal) {
    this.add(await getHistograms(this.runId, this.key, signal));
  }

  add(rows) {
    for (const row of rows) this.rows.set(row.step, row);
    this.draw();
  }

  sorted() {
    return [...this.rows.values()].sort((a, b) => a.step - b.step);
  }

  /** The step, bin and count under the pointer, below the heat-map. */
  hover(event) {
    const box = this.canvas.getBoundingClientRect();
    const bin = binAt(
      this.canvas,
      this.sorted(),
      event.clientX - box.left,
      event.clientY - box.top,
    );
    setText(
      this.readout,
      bin
        ? `step ${fmtNumber(bin.step)} · [${fmtNumber(bin.low)}, ${fmtNumber(bin.high)}) · ${fmtNumber(bin.count)}`
        : "",
    );
  }

  draw() {
    const rows = this.sorted();
    setText(this.note, `${rows.length} step${rows.length === 1 ? "" : "s"}`);
    this.node.dataset.steps = String(rows.length);
    drawHeatmap(this.canvas, rows);
  }
}

/** A logged table: the server sorts, filters and pages; a step picker for its versions. */
export class TablePanel {
  constructor(parent, runId, key, { pageSize = TABLE_PAGE } = {}) {
    this.runId = runId;
    this.key = key;
    this.pageSize = pageSize;
    this.query = { step: undefined, offset: 0, sort: undefined, desc: false, q: "" };
    this.steps = [];
    this.request = 0;
    const { node, note } = head(key, "table");
    this.node = node;
    this.note = note;
    this.stepPicker = h("select", {
      class: "table-step",
      "aria-label": `step of ${key}`,
      onchange: () => this.go({ step: Number(this.stepPicker.value), offset: 0 }),
    });
    let timer = 0;
    this.filter = h("input", {
      type: "search",
      class: "table-filter",
      placeholder: "filter rows",
      oninput: () => {
        clearTimeout(timer);
        timer = setTimeout(() => this.go({ q: this.filter.value, offset: 0 }), FILTER_DELAY_MS);
      },
    });
    this.prev = h(
      "button",
      { type: "button", class: "page-prev", onclick: () => this.page(-1) },
      "‹",
    );
    this.next = h(
      "button",
      { type: "button", class: "page-next", onclick: () => this.page(1) },
      "›",
    );
    this.position = h("span", { class: "page-position muted" });
    this.body = h("div", { class: "table-wrap" });
    node.append(
      h(
        "div",
        { class: "toolbar" },
        this.stepPicker,
        this.filter,
        this.prev,
        this.position,
        this.next,
      ),
      this.body,
    );
    parent.append(node);
  }

  async load(signal) {
    const values = await getMedia(this.runId, this.key, {}, signal);
    this.setSteps(values.map((v) => v.step));
    await this.go({}, signal);
  }

  setSteps(steps) {
    const latest = this.query.step === undefined || this.query.step === this.steps.at(-1);
    this.steps = [...new Set([...this.steps, ...steps])].sort((a, b) => a - b);
    replace(
      this.stepPicker,
      this.steps.map((step) => h("option", { value: step }, `step ${fmtNumber(step)}`)),
    );
    if (latest) this.query.step = this.steps.at(-1);
    this.stepPicker.value = String(this.query.step);
    this.stepPicker.hidden = this.steps.length < 2;
  }

  /** A new version of the table arrived live: show it when the latest was shown. */
  async add(values) {
    const shown = this.query.step;
    this.setSteps(values.map((v) => v.step));
    if (this.query.step === shown) return;
    for (let attempt = 0; attempt < TABLE_RETRIES; attempt += 1) {
      try {
        return await this.go({ offset: 0 });
      } catch {
        await new Promise((done) => setTimeout(done, TABLE_RETRY_MS));
      }
    }
  }

  page(direction) {
    const offset = this.query.offset + direction * this.pageSize;
    if (offset >= 0 && offset < this.total) this.go({ offset });
  }

  async go(patch, signal) {
    Object.assign(this.query, patch);
    const request = ++this.request;
    const page = await getTable(
      this.runId,
      this.key,
      { ...this.query, limit: this.pageSize },
      signal,
    );
    if (request === this.request) this.render(page);
  }

  render(page) {
    this.total = page.total;
    const { offset, sort, desc } = this.query;
    const last = Math.min(offset + page.rows.length, page.total);
    setText(this.note, `${fmtNumber(page.total)} rows`);
    setText(this.position, page.total ? `${offset + 1}–${last} of ${page.total}` : "no rows");
    this.prev.disabled = offset <= 0;
    this.next.disabled = last >= page.total;
    Object.assign(this.node.dataset, { offset: String(offset), total: String(page.total) });
    const header = page.columns.map((column) =>
      h(
        "th",
        {
          class: "sortable",
          dataset: { column, sort: column === sort ? (desc ? "desc" : "asc") : "" },
          onclick: () =>
            this.go({ sort: column, desc: column === sort ? !desc : false, offset: 0 }),
        },
        column,
        column === sort ? (desc ? " ▼" : " ▲") : "",
      ),
    );
    replace(
      this.body,
      h(
        "table",
        { class: "runs media-table" },
        h("thead", {}, h("tr", {}, header)),
        h(
          "tbody",
          {},
          page.rows.map((row) =>
            h(
              "tr",
              {},
              row.map((value) => h("td", {}, cell(value))),
            ),
          ),
        ),
      ),
    );
  }
}

/** The panel class for a media kind. */
export function panelFor(parent, runId, key, kind) {
  if (kind === "histogram") return new HistogramPanel(parent, runId, key);
  if (kind === "table") return new TablePanel(parent, runId, key);
  return new StepPanel(parent, runId, key, kind);
}
