// Formatting of times, durations and values for display, and the run-status rules.

import { isTyped } from "./fold.js";

/**
 * Seconds without an event after which a run still marked running is shown as stale
 * (its process stopped sending without a finish). System metrics arrive every 10 s by
 * default, so a live run is rarely silent this long. localStorage can change it.
 */
export const STALE_AFTER_S = Number(localStorage.getItem("waddle.staleAfterSeconds")) || 120;

const NON_FINITE = { NaN: NaN, Infinity: Infinity, "-Infinity": -Infinity };

/** A logged value as a number: the log spells NaN and infinities as strings. */
export function toNumber(value) {
  if (typeof value === "number") return value;
  if (typeof value === "string" && value in NON_FINITE) return NON_FINITE[value];
  if (typeof value === "boolean") return value ? 1 : 0;
  return null;
}

/** The status to show: the stored one, or "stale" for a silent run still marked running. */
export function displayStatus(run, now = Date.now() / 1000) {
  const status = run.status || "running";
  if (status !== "running") return status;
  const last = run.updated_at ?? run.started_at;
  return last != null && now - last > STALE_AFTER_S ? "stale" : "running";
}

export function fmtDateTime(ts) {
  if (ts == null) return "";
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

export function fmtDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.floor(s % 60)}s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours}h ${m % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

export function fmtNumber(value) {
  if (value === null || value === undefined) return "";
  if (typeof value !== "number") return String(value);
  if (Number.isNaN(value)) return "NaN";
  if (!Number.isFinite(value)) return value > 0 ? "Infinity" : "-Infinity";
  if (Number.isInteger(value) && Math.abs(value) < 1e15) return String(value);
  const a = Math.abs(value);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return value.toExponential(4);
  return String(Number(value.toPrecision(6)));
}

/** Any config or summary value as one line of text; null reads "null", a missing one "". */
export function fmtValue(value) {
  if (value === undefined) return "";
  if (value === null) return "null";
  if (typeof value === "number") return fmtNumber(value);
  if (typeof value === "string") return value;
  if (typeof value === "boolean") return String(value);
  return mediaLabel(value) ?? JSON.stringify(value);
}

/**
 * A typed value (or a list of them) in a table cell: "image 64×64", "3 images",
 * "histogram (32 bins)", "table (100 rows)"; null for any other value.
 */
export function mediaLabel(value) {
  if (Array.isArray(value)) {
    if (!value.length || !value.every(isTyped)) return null;
    return value.length === 1 ? mediaLabel(value[0]) : `${value.length} ${value[0]._type}s`;
  }
  if (!isTyped(value)) return null;
  if (value.width && value.height) return `${value._type} ${value.width}×${value.height}`;
  if (value._type === "histogram") return `histogram (${(value.counts || []).length} bins)`;
  if (value._type === "table") return `table (${value.nrows} rows)`;
  return value._type;
}

/** Nested objects as dotted keys: {opt: {lr: 1}} -> {"opt.lr": 1}. Arrays stay whole. */
export function flatten(object, prefix = "", out = {}) {
  for (const [key, value] of Object.entries(object || {})) {
    const name = prefix ? `${prefix}.${key}` : key;
    const nested = value && typeof value === "object" && !Array.isArray(value);
    if (nested && !isTyped(value) && Object.keys(value).length) {
      flatten(value, name, out);
    } else {
      out[name] = value;
    }
  }
  return out;
}

const flatCache = new WeakMap();

/** flatten(), remembered per object: config and summary objects are replaced, never edited. */
export function flat(object) {
  if (!object || typeof object !== "object") return {};
  let found = flatCache.get(object);
  if (!found) {
    found = flatten(object);
    flatCache.set(object, found);
  }
  return found;
}

export function fmtBytes(value) {
  if (value == null || !Number.isFinite(value)) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = value;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** Compare for sorting: numbers numerically, text naturally, empty values last. */
export function compareValues(a, b) {
  const emptyA = a === null || a === undefined || a === "";
  const emptyB = b === null || b === undefined || b === "";
  if (emptyA || emptyB) return emptyA === emptyB ? 0 : emptyA ? 1 : -1;
  const na = toNumber(a);
  const nb = toNumber(b);
  if (na !== null && nb !== null && typeof a !== "string" && typeof b !== "string") {
    return na === nb ? 0 : Number.isNaN(na) ? 1 : Number.isNaN(nb) ? -1 : na - nb;
  }
  return fmtValue(a).localeCompare(fmtValue(b), undefined, { numeric: true });
}
