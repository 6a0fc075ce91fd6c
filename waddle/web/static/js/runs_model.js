// What the runs table shows, without the DOM: its columns, the filters and the sort
// (fold.js keeps the rows live).

import { stepMetrics } from "./axis.js";
import {
  compareValues,
  displayStatus,
  flat,
  fmtDateTime,
  fmtDuration,
  fmtNumber,
  fmtValue,
  toNumber,
} from "./format.js";

export const STATUSES = ["running", "finished", "failed", "killed", "stale"];
// A Hugging Face run has some 150 config keys: a few columns of them, the rest on demand.
export const CONFIG_COLUMNS = 6;
const DEFAULT_SUMMARY_COLUMNS = 6;

function duration(run) {
  const status = displayStatus(run);
  const end = run.finished_at ?? (status === "running" ? Date.now() / 1000 : run.updated_at);
  return run.started_at == null || end == null ? null : end - run.started_at;
}

const BASE_COLUMNS = [
  { id: "name", label: "Name", value: (r) => r.name || r.run_id },
  { id: "status", label: "Status", value: (r) => displayStatus(r) },
  {
    id: "started",
    label: "Started",
    value: (r) => r.started_at,
    text: (r) => fmtDateTime(r.started_at),
  },
  {
    id: "duration",
    label: "Duration",
    value: duration,
    text: (r) => fmtDuration(duration(r)),
    num: true,
  },
  {
    id: "last_step",
    label: "Last step",
    value: (r) => r.last_step,
    text: (r) => fmtNumber(r.last_step),
    num: true,
  },
  { id: "tags", label: "Tags", value: (r) => (r.tags || []).join(" ") },
];

/** The fixed columns, then one per chosen summary key (the metrics), then config keys. */
export function columnsFor(chosen) {
  const extra = (field, keys) =>
    keys.map((key) => ({
      id: `${field}:${key}`,
      label: key,
      field,
      value: (r) => flat(r[field])[key],
      text: (r) => fmtValue(flat(r[field])[key]),
      num: true,
    }));
  return [...BASE_COLUMNS, ...extra("summary", chosen.summary), ...extra("config", chosen.config)];
}

/** The keys of a field (config, summary) across runs, the most common first. */
export function keysOf(runs, field) {
  const counts = new Map();
  for (const run of runs) {
    for (const key of Object.keys(flat(run[field]))) counts.set(key, (counts.get(key) || 0) + 1);
  }
  return [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || a.localeCompare(b));
}

function differs(runs, key) {
  return new Set(runs.map((r) => JSON.stringify(flat(r.config)[key]))).size > 1;
}

/** Config keys, those whose values differ between the runs first. */
export function configKeys(runs) {
  const keys = keysOf(runs, "config");
  const differing = keys.filter((key) => differs(runs, key));
  return [...differing, ...keys.filter((key) => !differing.includes(key))];
}

/**
 * The metrics' last values (summary keys, step counters and "_" keys left out), then at
 * most CONFIG_COLUMNS config columns, only ones whose values differ between the runs.
 */
export function defaultColumns(runs) {
  const steps = stepMetrics(runs);
  const summary = keysOf(runs, "summary")
    .filter((key) => !key.startsWith("_") && !steps.has(key))
    .slice(0, DEFAULT_SUMMARY_COLUMNS);
  const differing = keysOf(runs, "config").filter((key) => differs(runs, key));
  return { config: differing.slice(0, CONFIG_COLUMNS), summary };
}

/** The chosen columns with up to CONFIG_COLUMNS more config keys (differing ones first). */
export function withMoreConfig(runs, chosen) {
  const more = configKeys(runs).filter((key) => !chosen.config.includes(key));
  return { ...chosen, config: [...chosen.config, ...more.slice(0, CONFIG_COLUMNS)] };
}

/** A config filter "value": text matches as a substring; "=x", ">x", "<x" compare. */
export function matchesValue(value, wanted) {
  if (value === undefined) return false;
  const text = fmtValue(value);
  const match = /^(>=|<=|=|>|<)\s*(.*)$/.exec(wanted.trim());
  if (!match) return text.toLowerCase().includes(wanted.trim().toLowerCase());
  const [, op, operand] = match;
  if (op === "=") return text === operand;
  const a = toNumber(value);
  const b = Number(operand);
  if (a === null || !Number.isFinite(b)) return false;
  return { ">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b }[op];
}

/**
 * The runs that pass the filters {text, status, tag, configKey, configValue}, sorted by
 * {column, descending}; empty values last either way, ties by run id.
 */
export function visibleRuns(runs, filters, sort, columns) {
  const f = filters;
  const text = f.text.trim().toLowerCase();
  const kept = runs.filter((run) => {
    if (f.status && displayStatus(run) !== f.status) return false;
    if (f.tag && !(run.tags || []).includes(f.tag)) return false;
    if (f.configKey && f.configValue.trim()) {
      if (!matchesValue(flat(run.config)[f.configKey], f.configValue)) return false;
    } else if (f.configKey && !(f.configKey in flat(run.config))) return false;
    if (!text) return true;
    const haystack = [run.name, run.run_id, ...(run.tags || [])].join("\n").toLowerCase();
    return haystack.includes(text);
  });
  const column = columns.find((c) => c.id === sort.column) || BASE_COLUMNS[2];
  const sign = sort.descending ? -1 : 1;
  const empty = (v) => v === null || v === undefined || v === "";
  const keyed = kept.map((run) => [column.value(run), run]);
  keyed.sort((a, b) => {
    const order = compareValues(a[0], b[0]);
    if (empty(a[0]) || empty(b[0])) return order;
    return sign * order || a[1].run_id.localeCompare(b[1].run_id);
  });
  return keyed.map(([, run]) => run);
}
