// The media of a run: a panel per media key (media_panels.js), kept live from the typed
// values of metrics events (fold.js mediaValues), and the images of several runs side by
// side for the comparison view.

import { getMedia, listMedia } from "./api.js";
import { h, replace, setText } from "./dom.js";
import { mediaValues } from "./fold.js";
import { fmtNumber } from "./format.js";
import { mediaElement, panelFor } from "./media_panels.js";

const KIND_ORDER = ["image", "video", "audio", "histogram", "table"];

function byKindThenKey(a, b) {
  return KIND_ORDER.indexOf(a.kind) - KIND_ORDER.indexOf(b.kind) || (a.key < b.key ? -1 : 1);
}

/** A hidden `#media` section titled `title`, appended to `parent`, and its panel grid. */
function mediaSection(parent, title) {
  const grid = h("div", { class: "media-grid" });
  const node = h(
    "section",
    { class: "section", id: "media", hidden: true },
    h("h3", {}, title),
    grid,
  );
  parent.append(node);
  return { node, grid };
}

/** The media section of a run view; hidden while the run has no media. */
export class MediaSection {
  constructor(parent, runId) {
    this.runId = runId;
    this.panels = new Map();
    this.controller = new AbortController();
    ({ node: this.node, grid: this.grid } = mediaSection(parent, "Media"));
  }

  async load() {
    const keys = await listMedia(this.runId, this.controller.signal);
    await Promise.all(
      [...keys].sort(byKindThenKey).map(({ key, kind }) => this.panel(key, kind).loaded),
    );
  }

  panel(key, kind) {
    let entry = this.panels.get(key);
    if (!entry) {
      this.node.hidden = false;
      const panel = panelFor(this.grid, this.runId, key, kind);
      entry = { panel, loaded: panel.load(this.controller.signal).catch(() => null) };
      this.panels.set(key, entry);
    }
    return entry;
  }

  /** Live events: a typed value refreshes the panel of its key (a new key gets one). */
  addEvents(events) {
    for (const event of events) {
      for (const { key, kind, values } of mediaValues(event)) {
        const fresh = !this.panels.has(key);
        const { panel, loaded } = this.panel(key, kind);
        // A new panel loads everything, this value included once the server has it; the
        // value itself is shown meanwhile.
        const rows =
          kind === "histogram"
            ? values.map(({ bins, counts, step }) => ({ step, bins, counts }))
            : values;
        if (fresh) panel.add(rows);
        else loaded.then(() => panel.add(rows));
      }
    }
  }

  destroy() {
    this.controller.abort();
  }
}

/** Images of one key for several runs side by side, at one step shared by a slider. */
class CompareImages {
  constructor(parent, key, runs) {
    this.key = key;
    this.runs = runs;
    this.byRun = new Map(runs.map((run) => [run.id, new Map()]));
    this.steps = [];
    this.slider = h("input", {
      type: "range",
      class: "step-slider",
      min: 0,
      "aria-label": `step of ${key}`,
      oninput: () => this.show(Number(this.slider.value)),
    });
    this.stepLabel = h("span", { class: "step-label" });
    this.row = h("div", { class: "compare-media" });
    this.node = h(
      "div",
      { class: "media-panel", dataset: { key, kind: "image" } },
      h("div", { class: "chart-head" }, h("span", { class: "chart-title" }, key)),
      h("div", { class: "step-row" }, this.slider, this.stepLabel),
      this.row,
    );
    parent.append(this.node);
  }

  add(runId, values) {
    const steps = this.byRun.get(runId);
    if (!steps) return;
    const following = !this.steps.length || this.index === this.steps.length - 1;
    for (const value of values) {
      const list = (steps.get(value.step) || []).filter((v) => v.idx !== value.idx);
      steps.set(
        value.step,
        [...list, value].sort((a, b) => a.idx - b.idx),
      );
    }
    const current = this.steps[this.index];
    const all = new Set([...this.byRun.values()].flatMap((m) => [...m.keys()]));
    this.steps = [...all].sort((a, b) => a - b);
    this.slider.max = String(Math.max(this.steps.length - 1, 0));
    this.show(following ? this.steps.length - 1 : this.steps.indexOf(current));
  }

  show(index) {
    this.index = index;
    this.slider.value = String(index);
    const step = this.steps[index];
    this.node.dataset.step = step ?? "";
    setText(this.stepLabel, step === undefined ? "" : `step ${fmtNumber(step)}`);
    replace(
      this.row,
      this.runs.map((run) => {
        const values = this.byRun.get(run.id).get(step) || [];
        return h(
          "div",
          { class: "compare-media-run", dataset: { run: run.id } },
          h(
            "div",
            { class: "legend-run" },
            h("span", { class: "swatch", style: { background: run.color } }),
            run.label,
          ),
          values.length
            ? values.map((value) =>
                h(
                  "figure",
                  { class: "media-item", dataset: { idx: value.idx } },
                  mediaElement(value),
                  value.caption ? h("figcaption", {}, value.caption) : null,
                ),
              )
            : h("p", { class: "muted" }, "no image at this step"),
        );
      }),
    );
  }
}

/** The image keys of several runs (runs: [{id, label, color}]), a panel per key. */
export class CompareMedia {
  constructor(parent, runs) {
    this.runs = runs;
    this.panels = new Map();
    this.controller = new AbortController();
    ({ node: this.node, grid: this.grid } = mediaSection(parent, "Images"));
  }

  async load() {
    const signal = this.controller.signal;
    const lists = await Promise.all(this.runs.map((run) => listMedia(run.id, signal)));
    const keys = [
      ...new Set(
        lists
          .flat()
          .filter((m) => m.kind === "image")
          .map((m) => m.key),
      ),
    ];
    await Promise.all(
      keys.sort().flatMap((key) =>
        this.runs.map(async (run, i) => {
          if (!lists[i].some((m) => m.key === key)) return this.panel(key);
          this.panel(key).add(run.id, await getMedia(run.id, key, {}, signal));
        }),
      ),
    );
  }

  panel(key) {
    if (!this.panels.has(key)) {
      this.node.hidden = false;
      this.panels.set(key, new CompareImages(this.grid, key, this.runs));
    }
    return this.panels.get(key);
  }

  addEvents(runId, events) {
    for (const event of events) {
      for (const { key, kind, values } of mediaValues(event)) {
        if (kind === "image") this.panel(key).add(runId, values);
      }
    }
  }

  destroy() {
    this.controller.abort();
  }
}
