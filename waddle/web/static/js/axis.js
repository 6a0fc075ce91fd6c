// What the x axis of the metric charts is, and which metrics are charts at all, from the
// run's define_metric definitions (its `metric_defs`: {metric or glob: {step_metric,
// summary, hidden, goal}}). Pure: no DOM.
//
// The x axis is "step" (the producer's internal step), "time", "relative", or
// "metric:NAME": another logged metric, joined on step by the server. Left unset, it is
// the step metric the run's definitions name, so that Hugging Face (train/global_step) and
// Lightning (trainer/global_step) curves, logged on different internal steps, line up.

/** Metrics that count steps: never drawn as charts of their own. */
export const STEP_METRICS = ["train/global_step", "trainer/global_step", "global_step", "epoch"];
const METRIC = "metric:";

/** Whether `name` matches a define_metric pattern ("eval/*": any name under eval/). */
export function matches(pattern, name) {
  if (!pattern.includes("*")) return pattern === name;
  const escaped = pattern.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${escaped.join(".*")}$`).test(name);
}

/** The definitions of every run shown, merged: `[[pattern, definition], ...]`. */
function definitions(runs) {
  return runs.flatMap((run) => Object.entries(run.metric_defs || {}));
}

/** The metrics named as a step metric by the runs' definitions, and the usual ones. */
export function stepMetrics(runs) {
  const named = definitions(runs)
    .map(([, d]) => d.step_metric)
    .filter(Boolean);
  return new Set([...STEP_METRICS, ...named]);
}

/** The keys drawn as charts: neither a step metric nor defined hidden. */
export function chartKeys(keys, runs) {
  const steps = stepMetrics(runs);
  const hidden = definitions(runs)
    .filter(([, d]) => d.hidden)
    .map(([pattern]) => pattern);
  return keys.filter((key) => !steps.has(key) && !hidden.some((p) => matches(p, key)));
}

/** The x axis when none is chosen: the step metric most definitions name, else "step". */
export function defaultX(runs) {
  const counts = new Map();
  for (const [, d] of definitions(runs)) {
    if (d.step_metric) counts.set(d.step_metric, (counts.get(d.step_metric) || 0) + 1);
  }
  const [best] = [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  return best ? `${METRIC}${best[0]}` : "step";
}

/** The metric on x, or null when x is step or time. */
export function xMetric(mode) {
  return typeof mode === "string" && mode.startsWith(METRIC) ? mode.slice(METRIC.length) : null;
}

/** The x axis choices: step, time, relative, then every numeric metric of the runs. */
export function xChoices(keys, runs) {
  const steps = stepMetrics(runs);
  const metrics = [...new Set(keys)].sort(
    (a, b) => steps.has(b) - steps.has(a) || a.localeCompare(b),
  );
  return [
    ["step", "Step"],
    ["time", "Wall time"],
    ["relative", "Relative time"],
    ...metrics.map((key) => [`${METRIC}${key}`, key]),
  ];
}
