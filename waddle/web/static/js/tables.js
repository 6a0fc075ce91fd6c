// Key/value tables (config, summary, the run context), the comparison table of several
// runs, and the small status and tag labels.

import { h } from "./dom.js";
import { compareValues, flatten, fmtBytes, fmtDateTime, fmtValue } from "./format.js";

export function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, status);
}

export function tagChips(tags) {
  return (tags || []).map((tag) => h("span", { class: "tag" }, tag));
}

/** Two columns, one row per (flattened) key; `emptyText` when there is nothing. */
export function keyValueTable(object, emptyText = "None.") {
  const flat = flatten(object);
  const keys = Object.keys(flat).sort();
  if (!keys.length) return h("p", { class: "muted" }, emptyText);
  return h(
    "table",
    { class: "kv" },
    h(
      "tbody",
      {},
      keys.map((key) =>
        h("tr", {}, h("th", { scope: "row" }, key), h("td", {}, fmtValue(flat[key]))),
      ),
    ),
  );
}

/** Whether the runs disagree on a key (a key missing from some runs counts as differing). */
export function differs(values) {
  const texts = values.map((v) => (v === undefined ? "\u0000missing" : JSON.stringify(v)));
  return new Set(texts).size > 1;
}

/**
 * Rows of keys, a column per run; rows whose values differ get class "differs" and a mark.
 * runs: [{id, label, color, values}] with values an object (flattened here).
 */
export function comparisonTable(runs, { onlyDiffering = false, emptyText = "None." } = {}) {
  const flats = runs.map((run) => flatten(run.values));
  const keys = [...new Set(flats.flatMap((flat) => Object.keys(flat)))].sort((a, b) =>
    compareValues(a, b),
  );
  if (!keys.length) return h("p", { class: "muted" }, emptyText);
  const head = h(
    "tr",
    {},
    h("th", { class: "mark", "aria-label": "differs" }),
    h("th", {}, "key"),
    runs.map((run) =>
      h("th", {}, h("span", { class: "swatch", style: { background: run.color } }), run.label),
    ),
  );
  const rows = [];
  for (const key of keys) {
    const values = flats.map((flat) => flat[key]);
    const different = differs(values);
    if (onlyDiffering && !different) continue;
    rows.push(
      h(
        "tr",
        { class: different ? "differs" : "same", dataset: { key } },
        h("td", { class: "mark", title: different ? "values differ" : "" }, different ? "≠" : ""),
        h("th", { scope: "row" }, key),
        values.map((v) => h("td", { class: v === undefined ? "missing" : "" }, fmtValue(v))),
      ),
    );
  }
  if (!rows.length) return h("p", { class: "muted" }, "Every value is the same.");
  return h("table", { class: "kv compare" }, h("thead", {}, head), h("tbody", {}, rows));
}

/** The run context as a table: host, git, command line, Python, hardware. */
export function contextView(run) {
  const c = run.context || {};
  const git = c.git || {};
  const rows = [
    ["host", c.host],
    ["started", fmtDateTime(c.started_at)],
    ["command", Array.isArray(c.argv) ? c.argv.join(" ") : c.argv],
    ["cwd", c.cwd],
    ["python", [c.python_implementation, c.python].filter(Boolean).join(" ")],
    ["executable", c.executable],
    ["os", c.os],
    ["pid", c.pid],
    [
      "cpu",
      c.cpu
        ? `${c.cpu.model || "?"} (${c.cpu.logical ?? "?"} logical, ${c.cpu.physical ?? "?"} physical)`
        : null,
    ],
    ["memory", c.memory_total ? fmtBytes(c.memory_total) : null],
    ["git commit", git.commit ? `${git.commit}${git.dirty ? " (dirty)" : ""}` : null],
    ["git branch", git.branch],
    ["git remote", git.remote],
    [
      "code",
      c.code
        ? `${c.code.path || ""}${c.code.sha256 ? ` sha256 ${c.code.sha256.slice(0, 12)}` : ""}`
        : null,
    ],
  ];
  (c.gpus || []).forEach((gpu, i) => {
    const memory = gpu.memory_total ? `, ${fmtBytes(gpu.memory_total)}` : "";
    rows.push([`gpu ${gpu.index ?? i}`, `${gpu.name || fmtValue(gpu)}${memory}`]);
  });
  const shown = rows.filter(([, v]) => v !== null && v !== undefined && v !== "");
  const table = shown.length
    ? h(
        "table",
        { class: "kv context" },
        h(
          "tbody",
          {},
          shown.map(([k, v]) =>
            h(
              "tr",
              { dataset: { field: k } },
              h("th", { scope: "row" }, k),
              h("td", {}, String(v)),
            ),
          ),
        ),
      )
    : h("p", { class: "muted" }, "No context recorded.");
  const extra = [];
  if (git.dirty && git.diff) {
    extra.push(
      h(
        "details",
        {},
        h("summary", {}, "uncommitted changes (git diff)"),
        h("pre", { class: "code" }, git.diff),
      ),
    );
  }
  if (c.code && c.code.source) {
    extra.push(
      h(
        "details",
        {},
        h("summary", {}, "main script source"),
        h("pre", { class: "code" }, c.code.source),
      ),
    );
  }
  return h("div", {}, table, extra);
}
