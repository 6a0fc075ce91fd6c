// A panel of charts, one per key, grouped by key prefix ("train/loss" goes under "train").
//
// Sources are what a chart overlays: the runs being compared, or the processes (ranks) of
// one run for system metrics. A chart is created when it scrolls near the viewport and its
// series are fetched then, a few keys per request, downsampled on the server to about
// twice the chart's width in points. Live points go straight into loaded charts; points
// that arrive while a chart is loading wait and are appended after what the server sent.

import { getMetrics, getSystem } from "./api.js";
import { xMetric } from "./axis.js";
import { Chart } from "./chart.js";
import { h, setText } from "./dom.js";
import { toNumber } from "./format.js";
import { rankOfStream } from "./fold.js";

const KEYS_PER_REQUEST = 4;
const MAX_IN_FLIGHT = 4;
// A live series that grew this many times past what the server sent is fetched again,
// downsampled: redrawing stays cheap however long the page stays open.
const REFETCH_GROWTH = 4;
const REFETCH_MIN_POINTS = 5000;
const MAX_WAITING = 5000;
// Steps whose x-metric value a live panel remembers (events of one step arrive together).
const MAX_X_STEPS = 1000;

export function groupOf(key) {
  const cut = key.lastIndexOf("/");
  return cut > 0 ? key.slice(0, cut) : "";
}

export class ChartPanel {
  /**
   * options: kind ("metrics"|"system"), sources [{id, runId, rank, label, color, startedAt,
   * xMode (optional: this source's own x axis of metrics, e.g. its own step metric)}],
   * xMode ("step"|"time"|"relative"|"metric:NAME", axis.js), log, smooth, syncKey, emptyText,
   * isChart(key) (default: every key is a chart).
   */
  constructor(parent, options) {
    this.options = options;
    this.root = h("div", { class: "panel" });
    this.empty = h("p", { class: "muted" }, options.emptyText || "Nothing logged yet.");
    this.root.append(this.empty);
    parent.append(this.root);
    this.groups = new Map();
    this.slots = new Map();
    this.queue = new Set();
    this.inFlight = 0;
    this.waiting = [];
    this.filter = "";
    this.observer = new IntersectionObserver((entries) => this.visible(entries), {
      rootMargin: "300px 0px",
    });
    this.controller = new AbortController();
    // With a metric on x, live points need its value at their step: source id -> step -> x.
    this.xAtStep = new Map();
  }

  get xMode() {
    const mode = this.options.xMode;
    const stepped = mode === "step" || xMetric(mode) !== null;
    return this.options.kind === "system" && stepped ? "relative" : mode;
  }

  /** The x axis of one source: its own when it has one (metrics only), else the panel's. */
  xOf(source) {
    return this.options.kind === "metrics" && source.xMode ? source.xMode : this.xMode;
  }

  addKeys(keys) {
    const isChart = this.options.isChart || (() => true);
    for (const key of [...keys].sort()) {
      if (this.slots.has(key) || !isChart(key)) continue;
      const group = this.group(groupOf(key));
      const slot = h("div", { class: "chart-slot", dataset: { key } });
      slot.__key = key;
      const before = [...group.grid.children].find((node) => node.__key > key);
      group.grid.insertBefore(slot, before || null);
      setText(group.count, `${group.grid.children.length}`);
      this.slots.set(key, {
        slot,
        chart: null,
        loaded: new Set(),
        pending: new Map(),
        fetched: new Map(),
      });
      this.observer.observe(slot);
      this.applyFilter(key);
    }
    this.empty.hidden = this.slots.size > 0;
  }

  group(name) {
    let group = this.groups.get(name);
    if (group) return group;
    const count = h("span", { class: "count" });
    const grid = h("div", { class: "chart-grid" });
    const node = h(
      "details",
      { class: "group", open: true },
      h("summary", {}, h("span", { class: "group-name" }, name || "(no prefix)"), count),
      grid,
    );
    node.open = true;
    group = { name, node, grid, count };
    const after = [...this.groups.values()].find((g) => g.name > name);
    this.root.insertBefore(node, after ? after.node : null);
    this.groups.set(name, group);
    return group;
  }

  /** Show only the charts whose key contains `text` (case-insensitive). */
  setFilter(text) {
    this.filter = text.toLowerCase();
    for (const key of this.slots.keys()) this.applyFilter(key);
    for (const group of this.groups.values()) {
      group.node.hidden = ![...group.grid.children].some((node) => !node.hidden);
    }
  }

  applyFilter(key) {
    const { slot } = this.slots.get(key);
    slot.hidden = Boolean(this.filter) && !key.toLowerCase().includes(this.filter);
  }

  visible(entries) {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const key = entry.target.__key;
      this.observer.unobserve(entry.target);
      const state = this.slots.get(key);
      if (state.chart) continue;
      state.chart = new Chart(state.slot, {
        title: key,
        xMode: this.xMode,
        log: this.options.log,
        smooth: this.options.smooth,
        syncKey: this.options.syncKey,
        order: this.options.sources.map((source) => source.id),
        onSelect: (min, max) => this.options.onZoom?.(min, max),
        onReset: () => this.options.onResetZoom?.(),
      });
      if (this.zoom) state.chart.zoom = this.zoom;
      this.queue.add(key);
    }
    if (this.queue.size) queueMicrotask(() => this.flush());
  }

  flush() {
    const keys = [...this.queue];
    this.queue.clear();
    for (let i = 0; i < keys.length; i += KEYS_PER_REQUEST) {
      const batch = keys.slice(i, i + KEYS_PER_REQUEST);
      for (const source of this.options.sources) this.schedule(() => this.load(source, batch));
    }
  }

  schedule(task) {
    this.waiting.push(task);
    this.pump();
  }

  pump() {
    while (this.inFlight < MAX_IN_FLIGHT && this.waiting.length) {
      const task = this.waiting.shift();
      this.inFlight += 1;
      task()
        .catch((error) => {
          if (error.name !== "AbortError") console.warn("waddle: loading a chart failed", error);
        })
        .finally(() => {
          this.inFlight -= 1;
          this.pump();
        });
    }
  }

  async load(source, keys) {
    const width = Math.max(...keys.map((key) => this.slots.get(key).chart.width()));
    const maxPoints = Math.min(Math.max(Math.round(width * 2), 200), 20000);
    const signal = this.controller.signal;
    const series =
      this.options.kind === "system"
        ? await getSystem(source.runId, keys, { rank: source.rank, maxPoints }, signal)
        : await getMetrics(
            source.runId,
            keys,
            {
              x: this.xOf(source) === "step" ? "step" : "ts",
              xMetric: xMetric(this.xOf(source)),
              maxPoints,
            },
            signal,
          );
    for (const s of series) {
      const state = this.slots.get(s.key);
      if (!state || !state.chart) continue;
      const relative = this.xOf(source) === "relative";
      const x = relative ? s.x.map((v) => v - (source.startedAt || 0)) : s.x;
      state.chart.setSeries({
        id: source.id,
        label: source.label,
        color: source.color,
        x,
        y: s.y,
        count: s.count,
      });
      state.loaded.add(source.id);
      state.fetched.set(source.id, s.x.length);
      const waiting = state.pending.get(source.id);
      if (waiting) {
        state.pending.delete(source.id);
        state.chart.append(source.id, waiting);
      }
    }
  }

  /** Live events of one stream: metric (or system) values become points on the charts. */
  addEvents(runId, stream, events) {
    const type = this.options.kind === "system" ? "system" : "metrics";
    const rank = rankOfStream(stream);
    const source = this.options.sources.find(
      (s) => s.runId === runId && (type === "metrics" || s.rank === rank),
    );
    if (!source) return;
    const points = new Map();
    for (const event of events) {
      if (event.type !== type || !event.data) continue;
      const x = this.pointX(event, source);
      if (x === undefined) continue;
      for (const [key, raw] of Object.entries(event.data)) {
        const y = toNumber(raw);
        if (y === null) continue;
        if (!points.has(key)) points.set(key, []);
        points.get(key).push([x, y]);
      }
    }
    const fresh = [...points.keys()].filter((key) => !this.slots.has(key));
    if (fresh.length) this.addKeys(fresh);
    for (const [key, list] of points) {
      const state = this.slots.get(key);
      if (!state) continue;
      // Until a chart has what the server sent, its live points wait, to be appended after
      // it. Only the newest are kept: older ones are in the tables by the time it loads.
      if (state.chart && state.loaded.has(source.id)) {
        if (state.chart.append(source.id, list)) this.refetchIfLong(key, state, source);
      } else {
        const waiting = (state.pending.get(source.id) || []).concat(list);
        state.pending.set(source.id, waiting.slice(-MAX_WAITING));
      }
    }
  }

  refetchIfLong(key, state, source) {
    const length = state.chart.series.get(source.id)?.x.length || 0;
    const fetched = state.fetched.get(source.id) || 0;
    if (length < Math.max(REFETCH_GROWTH * fetched, REFETCH_MIN_POINTS)) return;
    state.loaded.delete(source.id);
    state.fetched.set(source.id, length);
    this.schedule(() => this.load(source, [key]));
  }

  /** The x of a live event's points; undefined while its step has no x-metric value. */
  pointX(event, source) {
    const mode = this.xOf(source);
    const metric = xMetric(mode);
    if (metric !== null) {
      if (!this.xAtStep.has(source.id)) this.xAtStep.set(source.id, new Map());
      const known = this.xAtStep.get(source.id);
      const value = toNumber(event.data[metric]);
      if (value !== null && Number.isFinite(value)) {
        known.set(event.step, value);
        if (known.size > MAX_X_STEPS) known.delete(known.keys().next().value);
      }
      return known.get(event.step);
    }
    if (mode === "step") return event.step;
    if (mode === "relative") return event.ts - (source.startedAt || 0);
    return event.ts;
  }

  charts() {
    return [...this.slots.values()].map((s) => s.chart).filter(Boolean);
  }

  setOptions(patch) {
    Object.assign(this.options, patch);
    for (const chart of this.charts()) chart.setOptions(patch);
  }

  zoomTo(min, max) {
    this.zoom = [min, max];
    for (const chart of this.charts()) chart.zoomTo(min, max);
  }

  resetZoom() {
    this.zoom = null;
    for (const chart of this.charts()) chart.resetZoom();
  }

  destroy() {
    this.controller.abort();
    this.observer.disconnect();
    for (const chart of this.charts()) chart.destroy();
    this.root.remove();
  }
}
