// What the runs table shows, without the DOM: its columns, the filters, the sort, and
// how live events change a run's row.

import { rankOfStream } from "./live.js";
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
const DEFAULT_CONFIG_COLUMNS = 4;
const DEFAULT_SUMMARY_COLUMNS = 4;

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

/** The fixed columns, then one per chosen config key and summary key. */
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
  return [...BASE_COLUMNS, ...extra("config", chosen.config), ...extra("summary", chosen.summary)];
}

/** The keys of a field (config, summary) across runs, the most common first. */
export function keysOf(runs, field) {
  const counts = new Map();
  for (const run of runs) {
    for (const key of Object.keys(flat(run[field]))) counts.set(key, (counts.get(key) || 0) + 1);
  }
  return [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || a.localeCompare(b));
}

/** Config columns whose values vary across runs, and the common summary metrics. */
export function defaultColumns(runs) {
  const configKeys = keysOf(runs, "config");
  const varying = configKeys.filter(
    (key) => new Set(runs.map((r) => JSON.stringify(flat(r.config)[key]))).size > 1,
  );
  const config = (varying.length ? varying : configKeys).slice(0, DEFAULT_CONFIG_COLUMNS);
  const summary = keysOf(runs, "summary")
    .filter((key) => !key.startsWith("_"))
    .slice(0, DEFAULT_SUMMARY_COLUMNS);
  return { config, summary };
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

/**
 * Fold a stream's live events into `runs` (Map run id -> row, as /api/runs gives them).
 * Returns whether the run is new. Rows are replaced field by field, never edited in
 * place, so cached flattenings stay right.
 */
export function foldEvents(runs, stream, runId, events) {
  let run = runs.get(runId);
  const isNew = !run;
  const lead = rankOfStream(stream) === 0;
  for (const event of events) {
    if (event.type === "run" && (!run || lead)) {
      run = {
        ...run,
        run_id: runId,
        project: event.project,
        name: event.name,
        config: event.config,
        tags: event.tags,
        notes: event.notes,
        group_name: event.group,
        job_type: event.job_type,
        status: "running",
        finished_at: null,
        exit_code: null,
        started_at: run?.started_at ?? event.context?.started_at ?? event.ts,
        summary: run?.summary || {},
      };
      runs.set(runId, run);
    }
    if (!run) continue;
    run.updated_at = Math.max(run.updated_at || 0, event.ts);
    if (event.type === "metrics") run.last_step = Math.max(run.last_step ?? -1, event.step);
    else if (event.type === "summary") run.summary = { ...run.summary, ...event.summary };
    else if (event.type === "config") run.config = { ...run.config, ...event.config };
    else if (event.type === "finish" && lead) {
      Object.assign(run, {
        status: event.status,
        exit_code: event.exit_code,
        finished_at: event.ts,
      });
    }
  }
  return isNew && runs.has(runId);
}
