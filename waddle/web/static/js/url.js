// The view lives in the URL's fragment, so a view can be bookmarked and shared:
//   #project=NAME                    the runs table of a project
//   #project=NAME&run=ID             one run
//   #project=NAME&compare=ID1,ID2    runs compared
// plus the chart settings: x=step|time|relative|metric:NAME (unset: the run's step
// metric, see axis.js), log=1, smooth=0.6.
// The fragment never reaches the server, so a ?token= in the query is left alone.

const DEFAULTS = { project: "", run: "", compare: [], x: "", log: false, smooth: 0 };
const X_MODES = ["step", "time", "relative"];

function validX(x) {
  if (X_MODES.includes(x)) return true;
  return typeof x === "string" && /^metric:./.test(x) && x.length <= 520;
}

export function readState() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const smooth = Number(params.get("smooth"));
  const x = params.get("x");
  return {
    project: params.get("project") || "",
    run: params.get("run") || "",
    compare: (params.get("compare") || "").split(",").filter(Boolean),
    x: validX(x) ? x : DEFAULTS.x,
    log: params.get("log") === "1",
    smooth: Number.isFinite(smooth) ? Math.min(Math.max(smooth, 0), 0.99) : 0,
  };
}

function toHash(state) {
  const params = new URLSearchParams();
  if (state.project) params.set("project", state.project);
  if (state.run) params.set("run", state.run);
  if (state.compare && state.compare.length) params.set("compare", state.compare.join(","));
  if (state.x && state.x !== DEFAULTS.x) params.set("x", state.x);
  if (state.log) params.set("log", "1");
  if (state.smooth) params.set("smooth", String(state.smooth));
  return `#${params.toString()}`;
}

/**
 * Change the state. A new view (project, run, compare) is a history entry; chart settings
 * replace the current one, so Back leaves the view rather than undoing a slider.
 */
export function updateState(patch, { push = null } = {}) {
  const next = { ...readState(), ...patch };
  const hash = toHash(next);
  if (hash === location.hash || (hash === "#" && !location.hash)) return next;
  const view = (s) => `${s.project}|${s.run}|${s.compare.join(",")}`;
  const isNewView = push ?? view(next) !== view(readState());
  const url = `${location.pathname}${location.search}${hash}`;
  if (isNewView) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
  return next;
}

/** Call `fn(state)` whenever the URL changes by navigation (Back, a pasted link). */
export function onStateChange(fn) {
  window.addEventListener("popstate", () => fn(readState()));
  window.addEventListener("hashchange", () => fn(readState()));
}
