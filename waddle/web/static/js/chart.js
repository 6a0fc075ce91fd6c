// One chart: a uPlot instance for one metric key, with one or more runs overlaid.
//
// The chart owns the series' points (already in its x units: step, Unix seconds or seconds
// since the run started) and turns them into what uPlot draws: non-finite values and, on
// a log scale, values <= 0 become gaps (and a badge names the first one, since a NaN loss
// is news); with smoothing each run gets an exponential moving average drawn over a faint
// raw curve. Several runs are aligned on one x array with uPlot.join. Hover values come
// from the chart's own legend, built with textContent.

import { faint } from "./colors.js";
import { h, replace, setText } from "./dom.js";
import { xMetric } from "./axis.js";
import { fmtDateTime, fmtDuration, fmtNumber } from "./format.js";

const HEIGHT = 200;
const uPlot = window.uPlot;

/** Debiased exponential moving average (as TensorBoard draws it); gaps stay gaps. */
export function ema(values, weight) {
  const out = new Array(values.length);
  let last = 0;
  let n = 0;
  for (let i = 0; i < values.length; i += 1) {
    const v = values[i];
    if (v === null || v === undefined) {
      out[i] = v;
      continue;
    }
    last = last * weight + (1 - weight) * v;
    n += 1;
    out[i] = last / (1 - weight ** n);
  }
  return out;
}

function fmtX(mode, x) {
  if (x === null || x === undefined) return "";
  if (mode === "time") return fmtDateTime(x);
  if (mode === "relative") return fmtDuration(x);
  return `${xMetric(mode) ?? "step"} ${fmtNumber(x)}`;
}

const SI = [
  [1e12, "T"],
  [1e9, "G"],
  [1e6, "M"],
  [1e3, "k"],
];

/** Axis labels: short, with SI suffixes for large values and exponents for tiny ones. */
export function compact(value) {
  if (value === null || value === undefined) return "";
  const a = Math.abs(value);
  if (a >= 1e4) {
    const [scale, suffix] = SI.find(([limit]) => a >= limit);
    return `${Number((value / scale).toPrecision(3))}${suffix}`;
  }
  if (a !== 0 && a < 1e-3) return value.toExponential(1);
  return String(Number(value.toPrecision(4)));
}

function axisSize(u, values, axisIdx, cycleNum) {
  const longest = Math.max(0, ...(values || []).map((v) => String(v).length));
  return cycleNum > 1 ? u.axes[axisIdx]._size : Math.max(40, longest * 8 + 24);
}

export class Chart {
  /**
   * options: title, xMode ("step"|"time"|"relative"), log, smooth (0..0.99), syncKey,
   * order (series ids in legend order), onSelect(min, max) when the user drags a range,
   * onReset() on double-click.
   */
  constructor(parent, options) {
    this.options = { log: false, smooth: 0, ...options };
    this.series = new Map();
    this.zoom = null;
    this.uplot = null;
    this.root = h("div", { class: "chart" });
    this.root.__chart = this;
    this.titleNode = h("span", { class: "chart-title" }, options.title);
    this.badge = h("span", { class: "badge warn", hidden: true });
    this.note = h("span", { class: "chart-note" });
    this.plot = h("div", { class: "chart-plot" });
    this.legend = h("div", { class: "chart-legend" });
    this.root.append(
      h("div", { class: "chart-head" }, this.titleNode, this.badge, this.note),
      this.plot,
      this.legend,
    );
    parent.append(this.root);
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(this.root);
  }

  /** Width the plot will have, for sizing max_points before any data arrives. */
  width() {
    return Math.max(200, Math.floor(this.root.clientWidth || 400));
  }

  /** Replace one run's points: {id, label, color, x, y, count}. */
  setSeries(item) {
    const x = Array.from(item.x);
    const y = Array.from(item.y);
    this.series.set(item.id, { ...item, x, y });
    this.redraw();
  }

  /** Add live points to a run's series; a point not after the last one is ignored. */
  append(id, points) {
    const s = this.series.get(id);
    if (!s) return false;
    let added = false;
    for (const [x, y] of points) {
      if (s.x.length && x <= s.x[s.x.length - 1]) continue;
      s.x.push(x);
      s.y.push(y);
      s.count = (s.count || 0) + 1;
      added = true;
    }
    if (added) this.redraw();
    return added;
  }

  lastX(id) {
    const s = this.series.get(id);
    return s && s.x.length ? s.x[s.x.length - 1] : null;
  }

  setOptions(patch) {
    const rebuild = "log" in patch && patch.log !== this.options.log;
    Object.assign(this.options, patch);
    if (rebuild) this.destroyPlot();
    this.redraw();
  }

  build() {
    const { log, smooth } = this.options;
    const tables = [];
    const specs = [];
    let problem = null;
    for (const s of this.ordered()) {
      const raw = new Array(s.y.length);
      for (let i = 0; i < s.y.length; i += 1) {
        const v = s.y[i];
        const bad = v === null || !Number.isFinite(v);
        if (bad && !problem && v !== null) problem = { x: s.x[i], v, label: s.label };
        raw[i] = bad || (log && v <= 0) ? null : v;
      }
      const table = [s.x, raw];
      specs.push({
        label: s.label,
        stroke: smooth ? faint(s.color) : s.color,
        width: 1,
        raw: true,
        id: s.id,
      });
      if (smooth) {
        table.push(ema(raw, smooth));
        specs.push({ label: s.label, stroke: s.color, width: 1.5, raw: false, id: s.id });
      }
      tables.push(table);
    }
    let data;
    if (!tables.length) data = [[]];
    else if (tables.length === 1) data = tables[0];
    else data = uPlot.join(tables);
    return { data, specs, problem };
  }

  /** The series in the order of options.order (the sources' order), then the rest. */
  ordered() {
    const order = this.options.order || [];
    const rank = (id) => (order.includes(id) ? order.indexOf(id) : order.length);
    return [...this.series.values()].sort((a, b) => rank(a.id) - rank(b.id));
  }

  redraw() {
    const { data, specs, problem } = this.build();
    this.showProblem(problem);
    this.showCounts();
    const shape = specs.map((s) => `${s.id}|${s.stroke}|${s.width}`).join(",");
    if (!this.uplot || this.shape !== shape) {
      this.destroyPlot();
      this.shape = shape;
      this.specs = specs;
      this.uplot = new uPlot(this.uplotOptions(specs), data, this.plot);
      if (this.zoom) this.uplot.setScale("x", { min: this.zoom[0], max: this.zoom[1] });
      this.buildLegend();
    } else {
      this.uplot.setData(data, !this.zoom);
      if (this.zoom) this.uplot.setScale("x", { min: this.zoom[0], max: this.zoom[1] });
    }
    this.updateLegend();
  }

  showProblem(problem) {
    this.badge.hidden = !problem;
    if (!problem) return;
    const name = Number.isNaN(problem.v) ? "NaN" : problem.v > 0 ? "Infinity" : "-Infinity";
    setText(this.badge, `${name} at ${fmtX(this.options.xMode, problem.x)}`);
    this.badge.title = `${problem.label}: the first non-finite value; drawn as a gap`;
  }

  showCounts() {
    const thinned = this.ordered().filter((s) => s.count > s.x.length);
    if (!thinned.length) return setText(this.note, "");
    const s = thinned[0];
    setText(this.note, `${fmtNumber(s.x.length)} of ${fmtNumber(s.count)} points`);
    this.note.title = "downsampled on the server to the chart's width (M4: every spike kept)";
  }

  uplotOptions(specs) {
    const { xMode, log, syncKey } = this.options;
    const xAxis = { stroke: "#555", grid: { stroke: "#eee" }, ticks: { stroke: "#ddd" } };
    if (xMode === "relative") xAxis.values = (u, splits) => splits.map(fmtDuration);
    return {
      width: this.width(),
      height: HEIGHT,
      legend: { show: false },
      scales: {
        x: { time: xMode === "time" },
        y: log ? { distr: 3, log: 10 } : { auto: true },
      },
      axes: [
        xAxis,
        {
          stroke: "#555",
          size: axisSize,
          grid: { stroke: "#eee" },
          ticks: { stroke: "#ddd" },
          values: (u, splits) => splits.map(compact),
        },
      ],
      series: [
        {},
        ...specs.map((s) => ({
          label: s.label,
          stroke: s.stroke,
          width: s.width,
          spanGaps: false,
        })),
      ],
      cursor: {
        sync: syncKey ? { key: syncKey } : undefined,
        drag: { x: true, y: false, setScale: true },
        points: { size: 6 },
      },
      hooks: {
        setCursor: [() => this.updateLegend()],
        setSelect: [(u) => this.selected(u)],
        ready: [(u) => u.over.addEventListener("dblclick", () => this.options.onReset?.())],
      },
    };
  }

  selected(u) {
    if (u.select.width < 2) return;
    const min = u.posToVal(u.select.left, "x");
    const max = u.posToVal(u.select.left + u.select.width, "x");
    this.zoom = [min, max];
    this.options.onSelect?.(min, max);
  }

  zoomTo(min, max) {
    this.zoom = [min, max];
    this.uplot?.setScale("x", { min, max });
  }

  resetZoom() {
    this.zoom = null;
    if (this.uplot) this.uplot.setData(this.uplot.data, true);
  }

  buildLegend() {
    this.legendRows = [];
    this.legendX = h("div", { class: "legend-x" });
    const rows = [this.legendX];
    const byRun = new Map();
    this.specs.forEach((spec, i) => {
      if (!byRun.has(spec.id)) byRun.set(spec.id, { spec, raw: null, smooth: null });
      byRun.get(spec.id)[spec.raw ? "raw" : "smooth"] = i + 1;
    });
    for (const { spec, raw, smooth } of byRun.values()) {
      const value = h("span", { class: "legend-value" });
      const rawValue = h("span", { class: "legend-raw" });
      const color = this.series.get(spec.id)?.color || spec.stroke;
      rows.push(
        h(
          "div",
          { class: "legend-row" },
          h("span", { class: "swatch", style: { background: color } }),
          h("span", { class: "legend-label" }, spec.label),
          value,
          rawValue,
        ),
      );
      this.legendRows.push({ raw, smooth, value, rawValue });
    }
    replace(this.legend, rows);
  }

  /** The values under the cursor (or the last ones) of every run. */
  updateLegend() {
    const u = this.uplot;
    if (!u || !this.legendRows) return;
    const at = u.cursor.idx;
    const idxs = u.cursor.idxs || [];
    const pick = (si) => {
      if (si === null) return [null, null];
      const ys = u.data[si];
      let i = at === null || at === undefined ? null : (idxs[si] ?? at);
      if (i === null) {
        i = ys.length - 1;
        while (i >= 0 && ys[i] === undefined) i -= 1;
      }
      return i >= 0 ? [ys[i], i] : [null, null];
    };
    let shownX = null;
    for (const row of this.legendRows) {
      const [main, i] = pick(row.smooth ?? row.raw);
      if (i !== null && shownX === null) shownX = u.data[0][i];
      setText(row.value, main === null || main === undefined ? "–" : fmtNumber(main));
      if (row.smooth !== null) {
        const [raw] = pick(row.raw);
        setText(row.rawValue, raw === null || raw === undefined ? "" : `raw ${fmtNumber(raw)}`);
      }
    }
    setText(
      this.legendX,
      fmtX(this.options.xMode, at === null || at === undefined ? shownX : u.data[0][at]),
    );
  }

  resize() {
    if (!this.uplot) return;
    const width = this.width();
    if (Math.abs(width - this.uplot.width) > 1) this.uplot.setSize({ width, height: HEIGHT });
  }

  destroyPlot() {
    if (this.uplot) this.uplot.destroy();
    this.uplot = null;
    this.shape = null;
  }

  destroy() {
    this.resizer.disconnect();
    this.destroyPlot();
    this.root.remove();
  }
}
