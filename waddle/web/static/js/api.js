// The HTTP client: one function per read endpoint of docs/api.md. Paths are relative to
// the page, so the dashboard also works behind a reverse proxy under a prefix.

import { toNumber } from "./format.js";

const ROOT = new URL(".", location.href);

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function url(path, params = {}) {
  const target = new URL(path, ROOT);
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => target.searchParams.append(name, v));
    else target.searchParams.set(name, String(value));
  }
  return target;
}

export async function getJSON(path, params, signal) {
  const response = await fetch(url(path, params), {
    signal,
    headers: { Accept: "application/json" },
    credentials: "same-origin",
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

const runPath = (runId, tail = "") => `api/runs/${encodeURIComponent(runId)}${tail}`;

/** Projects with their run counts: [{name, runs, last_started_at}]. */
export async function listProjects(signal) {
  return (await getJSON("info", {}, signal)).projects || [];
}

/**
 * One page of runs, filtered and sorted by the server (query: the parameters of
 * GET /api/runs, see runs_model.runsQuery): {runs, total, offset, next_offset}.
 */
export function listRuns(query, signal) {
  return getJSON("api/runs", query, signal);
}

/** The tags, config keys and summary keys of a project's runs: {total, tags, config, summary}. */
export function getFacets(project, signal) {
  return getJSON("api/facets", { project }, signal);
}

export function getRun(runId, signal) {
  return getJSON(runPath(runId), {}, signal);
}

export function getKeys(runId, signal) {
  return getJSON(runPath(runId, "/keys"), {}, signal);
}

function numericSeries(series) {
  return series.map((s) => ({ ...s, y: s.y.map(toNumber) }));
}

/**
 * Downsampled metric series: [{key, x, y, count, downsampled}], x by "step" or "ts", or
 * by the values of the metric `xMetric` at the same step.
 */
export async function getMetrics(
  runId,
  keys,
  { x = "step", xMetric = null, maxPoints = 2000 } = {},
  signal,
) {
  const body = await getJSON(
    runPath(runId, "/metrics"),
    { key: keys, x, x_metric: xMetric, max_points: maxPoints },
    signal,
  );
  return numericSeries(body.series);
}

/** Downsampled system series of one process of a run (rank), x is ts. */
export async function getSystem(runId, keys, { rank = 0, maxPoints = 2000 } = {}, signal) {
  const body = await getJSON(
    runPath(runId, "/system"),
    { key: keys, rank, max_points: maxPoints },
    signal,
  );
  return numericSeries(body.series);
}

/** Console lines of one process after seq `after`: {lines, next_after}. */
export function getConsole(runId, { rank = 0, after = -1, limit = 1000 } = {}, signal) {
  return getJSON(runPath(runId, "/console"), { rank, after, limit }, signal);
}

// Media (docs/api.md, "Media"): keys, values by step, histograms, paged tables, files and
// artifacts. Blob bytes are never fetched here: views point <img> or a download link at
// blobUrl(), and the server serves them with nosniff and a sandboxing CSP.

/** The media keys of a run: [{key, kind, steps, last_step}]. */
export function listMedia(runId, signal) {
  return getJSON(runPath(runId, "/media"), {}, signal);
}

/** Media values of one key, every step or one: [{step, idx, kind, sha256, format, ...}]. */
export function getMedia(runId, key, { step } = {}, signal) {
  return getJSON(runPath(runId, `/media/${encodeKey(key)}`), { step }, signal);
}

/** Histograms of one key over steps: [{step, bins, counts}]. */
export function getHistograms(runId, key, signal) {
  return getJSON(runPath(runId, `/histograms/${encodeKey(key)}`), {}, signal);
}

/** One page of a logged table, sorted and filtered by the server: {columns, rows, total, step}. */
export function getTable(runId, key, { step, offset = 0, limit = 50, sort, desc, q } = {}, signal) {
  return getJSON(
    runPath(runId, `/tables/${encodeKey(key)}`),
    { step, offset, limit, sort, desc: desc ? "true" : undefined, q },
    signal,
  );
}

/** A run's saved files and the artifact versions it logged and used. */
export function getRunArtifacts(runId, signal) {
  return getJSON(runPath(runId, "/artifacts"), {}, signal);
}

/** Every version of an artifact, with the run that logged it and the runs that used it. */
export function getArtifact(name, signal) {
  return getJSON(`api/artifacts/${encodeKey(name)}`, {}, signal);
}

/** Where the bytes of a blob are served (relative: works under a proxy prefix). */
export function blobUrl(sha256) {
  return url(`blobs/${encodeURIComponent(sha256)}`).href;
}

// A key may hold "/" (e.g. "samples/val"): each segment is encoded, the slashes kept.
function encodeKey(key) {
  return String(key).split("/").map(encodeURIComponent).join("/");
}
