// What the runs table shows, without the DOM: its columns and the query it sends. The
// server filters, sorts and pages the runs (GET /api/runs); fold.js keeps the rows of the
// page live; the menus (tags, config and summary keys) come from GET /api/facets.

import { stepMetrics } from "./axis.js";
import {
  STALE_AFTER_S,
  displayStatus,
  flat,
  fmtDateTime,
  fmtDuration,
  fmtNumber,
  fmtValue,
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
  { id: "name", sort: "name", label: "Name", value: (r) => r.name || r.run_id },
  { id: "status", sort: "status", label: "Status", value: (r) => displayStatus(r) },
  {
    id: "started",
    sort: "started_at",
    label: "Started",
    value: (r) => r.started_at,
    text: (r) => fmtDateTime(r.started_at),
  },
  {
    id: "duration",
    sort: "duration",
    label: "Duration",
    value: duration,
    text: (r) => fmtDuration(duration(r)),
    num: true,
  },
  {
    id: "last_step",
    sort: "last_step",
    label: "Last step",
    value: (r) => r.last_step,
    text: (r) => fmtNumber(r.last_step),
    num: true,
  },
  { id: "tags", sort: "tags", label: "Tags", value: (r) => (r.tags || []).join(" ") },
];

/** The fixed columns, then one per chosen summary key (the metrics), then config keys. */
export function columnsFor(chosen) {
  const extra = (field, keys) =>
    keys.map((key) => ({
      id: `${field}:${key}`,
      sort: `${field}:${key}`,
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

/** The keys of a field across every run of the project, the most common first (facets). */
export function facetKeys(facets, field) {
  return (facets?.[field] || []).map((f) => f.key);
}

/** Config keys of the project, those whose values differ between its runs first. */
export function configKeys(facets) {
  const all = facets?.config || [];
  const differ = (f) => f.values > 1 || f.runs < facets.total;
  return [...all.filter(differ), ...all.filter((f) => !differ(f))].map((f) => f.key);
}

/**
 * The metrics' last values (summary keys, step counters and "_" keys left out), then at
 * most CONFIG_COLUMNS config columns, only ones whose values differ between the runs
 * (those of the first page: the table paints without waiting for the project's facets).
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
export function withMoreConfig(facets, chosen) {
  const more = configKeys(facets).filter((key) => !chosen.config.includes(key));
  return { ...chosen, config: [...chosen.config, ...more.slice(0, CONFIG_COLUMNS)] };
}

/**
 * The query of GET /api/runs for the filters {text, status, tag, configKey, configValue},
 * the sort {column, descending} (a column of `columns`) and the page.
 */
export function runsQuery(project, filters, sort, columns, { offset, limit }) {
  const column = columns.find((c) => c.id === sort.column) || BASE_COLUMNS[2];
  const trimmed = (value) => value.trim() || undefined;
  return {
    project,
    q: trimmed(filters.text),
    status: filters.status || undefined,
    stale_after: STALE_AFTER_S,
    tag: filters.tag || undefined,
    config_key: filters.configKey || undefined,
    config_value: filters.configKey ? trimmed(filters.configValue) : undefined,
    sort: column.sort,
    order: sort.descending ? "desc" : "asc",
    offset,
    limit,
  };
}
