// The one place the dashboard folds live events into a run's state, with the rules of the
// server's fold (waddle/consumers/duckdb/fold.py; docs/schema.md states them), so a row
// kept live in the browser equals the row the server would read back. A test runs both
// over the same events and compares them field by field.
//
// * A stream has the rank of its `run` event (else the ".<rank>" of its name, else 0) and
//   keeps its own config and summary.
// * A run follows its lead, the lowest rank seen: identity, config, summary, status and
//   metric_defs are the lead's. A `run` event makes it running again; `finish` ends it.
// * started_at is the earliest start of a non-resumed `run` event; last_step the highest
//   step of any rank; updated_at the latest event time.
//
// Pure: no DOM, importable in node. Objects (config, summary, metric_defs) are replaced,
// never edited in place, so what views cached from the old ones stays right.

/** The process (rank) of a stream: "<run_id>.<rank>", or 0 for the run id itself. */
export function rankOfStream(stream) {
  const match = /\.(\d+)$/.exec(stream);
  return match ? Number(match[1]) : 0;
}

/** A run as the fold starts it (the fields of a `runs` row, and its lead rank). */
export function newRun(runId) {
  return {
    run_id: runId,
    project: null,
    name: null,
    status: "running",
    started_at: null,
    finished_at: null,
    exit_code: null,
    config: {},
    summary: {},
    context: {},
    tags: [],
    notes: null,
    group_name: null,
    job_type: null,
    last_step: null,
    updated_at: null,
    metric_defs: {},
    lead_rank: null,
  };
}

/** A stream's own state. */
export function newStream(stream, runId, rank) {
  return {
    stream,
    run_id: runId,
    rank,
    status: "running",
    started_at: null,
    finished_at: null,
    exit_code: null,
    config: {},
    summary: {},
  };
}

function startTime(event) {
  const started = event.context?.started_at;
  return typeof started === "number" ? started : event.ts;
}

/** Whether `stream` is (now) the lead of `run`; a lower rank takes the lead. */
function leads(run, stream) {
  if (run.lead_rank === null || run.lead_rank === undefined || stream.rank < run.lead_rank) {
    run.lead_rank = stream.rank;
    run.summary = { ...stream.summary };
  }
  return stream.rank === run.lead_rank;
}

function seen(run, ts, step) {
  if (run.updated_at === null || run.updated_at === undefined || ts > run.updated_at) {
    run.updated_at = ts;
  }
  if (
    step !== undefined &&
    (run.last_step === null || run.last_step === undefined || step > run.last_step)
  ) {
    run.last_step = step;
  }
}

function applyRun(run, stream, event) {
  const started = startTime(event);
  Object.assign(stream, { status: "running", finished_at: null, exit_code: null });
  stream.config = { ...event.config };
  if (stream.started_at === null) stream.started_at = started;
  if (
    run.started_at === null ||
    run.started_at === undefined ||
    (!event.resumed && started < run.started_at)
  ) {
    run.started_at = started;
  }
  if (leads(run, stream)) {
    Object.assign(run, {
      project: event.project,
      name: event.name,
      config: { ...stream.config },
      context: event.context,
      tags: event.tags.map(String),
      notes: event.notes,
      group_name: event.group,
      job_type: event.job_type,
      status: "running",
      finished_at: null,
      exit_code: null,
    });
  }
}

const DEFINE_FIELDS = ["step_metric", "summary", "hidden", "goal"];

/** Fold one event of `stream` into `run` (both changed; see the rules above). */
export function applyEvent(run, stream, event) {
  const kind = event.type;
  if (kind === "skipped") return; // a relay's placeholder for a lost seq: nothing to fold
  if (kind === "metrics") return seen(run, event.ts, event.step);
  if (kind === "run") applyRun(run, stream, event);
  else if (kind === "finish") {
    Object.assign(stream, {
      status: event.status,
      exit_code: event.exit_code,
      finished_at: event.ts,
    });
    if (leads(run, stream)) {
      Object.assign(run, {
        status: event.status,
        exit_code: event.exit_code,
        finished_at: event.ts,
      });
    }
  } else if (kind === "config") {
    stream.config = { ...stream.config, ...event.config };
    if (leads(run, stream)) run.config = { ...run.config, ...event.config };
  } else if (kind === "summary") {
    stream.summary = { ...stream.summary, ...event.summary };
    if (leads(run, stream)) run.summary = { ...run.summary, ...event.summary };
  } else if (kind === "define_metric") {
    if (leads(run, stream)) {
      const definition = Object.fromEntries(DEFINE_FIELDS.map((f) => [f, event[f] ?? null]));
      run.metric_defs = { ...run.metric_defs, [event.metric]: definition };
    }
  }
  return seen(run, event.ts);
}

/**
 * The live runs of a view: rows as /api/runs or /api/runs/{id} gave them, kept up to date
 * by the events of their streams.
 */
export class RunFold {
  constructor() {
    this.runs = new Map();
    this.streams = new Map();
  }

  /**
   * Start from a row the server read back. Its `streams` (/api/runs/{id}) set the lead;
   * a row of /api/runs has none, and its lead is taken to be rank 0, the main process.
   */
  seed(record) {
    const ranks = (record.streams || []).map((s) => s.rank);
    const run = { ...newRun(record.run_id), ...record };
    run.lead_rank = ranks.length ? Math.min(...ranks) : (record.lead_rank ?? 0);
    for (const key of ["config", "summary", "context", "metric_defs"]) run[key] ||= {};
    run.tags ||= [];
    this.runs.set(run.run_id, run);
    return run;
  }

  /** Fold events of one stream; returns the run, or null when none is known yet. */
  apply(streamName, runId, events) {
    let stream = this.streams.get(streamName);
    for (const event of events) {
      if (!stream) {
        const rank =
          event.type === "run" && Number.isInteger(event.rank) && event.rank >= 0
            ? event.rank
            : rankOfStream(streamName);
        stream = newStream(streamName, runId, rank);
        this.streams.set(streamName, stream);
      }
      let run = this.runs.get(runId);
      if (!run) {
        run = newRun(runId);
        this.runs.set(runId, run);
      }
      applyEvent(run, stream, event);
    }
    return this.runs.get(runId) || null;
  }
}

// Typed values (docs/log-format.md): a metrics value that is a dict with a string `_type`,
// or a list of them under one key, is media, not a number. Charts take numbers only
// (toNumber gives null for these); the media panels take them from here.
const MEDIA_TYPES = new Set(["image", "histogram", "table", "audio", "video"]);

/** Whether a logged value is one typed value (an image, a histogram, ...). */
export function isTyped(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    !Array.isArray(value) &&
    MEDIA_TYPES.has(value._type)
  );
}

/**
 * The typed values of a metrics event, one entry per key: {key, step, kind, values}, the
 * values in the rows the media endpoints answer ({step, idx, kind, ...fields}).
 */
export function mediaValues(event) {
  if (event.type !== "metrics" || !event.data) return [];
  const found = [];
  for (const [key, raw] of Object.entries(event.data)) {
    const list = Array.isArray(raw) ? raw : [raw];
    if (!list.length || !list.every(isTyped)) continue;
    const kind = list[0]._type;
    if (!list.every((value) => value._type === kind)) continue;
    const values = list.map(({ _type, ...fields }, idx) => ({
      ...fields,
      step: event.step,
      idx,
      kind,
    }));
    found.push({ key, step: event.step, kind, values });
  }
  return found;
}
