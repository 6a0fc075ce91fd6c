// The dashboard's entry point: the header with the project picker, and the router that
// shows the runs table, a run or a comparison from the URL (see url.js).

import { listProjects } from "./api.js";
import { CompareView } from "./compare_view.js";
import { h, replace } from "./dom.js";
import { RunView } from "./run_view.js";
import { RunsTable } from "./runs_table.js";
import { onStateChange, readState, updateState } from "./url.js";

const main = document.getElementById("main");
const picker = document.getElementById("project");
const crumbs = document.getElementById("crumbs");
let view = null;
let viewKey = "";
let projectNames = [];

const app = {
  state: readState(),
  /** Go to another view (a history entry) and show it. */
  navigate(patch) {
    app.state = updateState(patch);
    show();
  },
  /** Chart settings: views apply log and smoothing in place; a new x axis reloads. */
  setOptions(patch) {
    app.state = updateState(patch, { push: false });
    if (!view || !view.setOptions || !view.setOptions(patch)) show();
  },
};

async function loadProjects() {
  let projects = [];
  try {
    projects = await listProjects();
  } catch (error) {
    replace(main, h("p", { class: "error" }, `Cannot reach the Waddle server: ${error.message}`));
    return [];
  }
  const current = app.state.project;
  const names = projects.map((p) => p.name);
  if (current && !names.includes(current)) names.unshift(current);
  replace(
    picker,
    names.length ? null : h("option", { value: "" }, "no projects yet"),
    names.map((name) => {
      const info = projects.find((p) => p.name === name);
      const label = info ? `${name} (${info.runs})` : name;
      return h("option", { value: name, selected: name === current }, label);
    }),
  );
  projectNames = names;
  return names;
}

function renderCrumbs(state) {
  const items = [];
  if (state.project) {
    items.push(h("a", { href: `#${new URLSearchParams({ project: state.project })}` }, "runs"));
  }
  if (state.run) items.push(" / ", h("span", {}, state.run));
  if (state.compare.length) items.push(" / ", h("span", {}, `compare ${state.compare.length}`));
  replace(crumbs, items);
}

function show() {
  let state = readState();
  if (!state.project && projectNames.length) {
    state = updateState({ project: projectNames[0] }, { push: false });
  }
  app.state = state;
  const key = `${state.project}|${state.run}|${state.compare.join(",")}|${state.x}`;
  if (key === viewKey && view) return;
  viewKey = key;
  if (view) view.destroy();
  view = null;
  main.replaceChildren();
  renderCrumbs(state);
  document.title = state.run
    ? `${state.run} · Waddle`
    : state.project
      ? `${state.project} · Waddle`
      : "Waddle";
  if (state.compare.length > 1) view = new CompareView(main, state.compare, app);
  else if (state.run || state.compare.length === 1)
    view = new RunView(main, state.run || state.compare[0], app);
  else if (state.project) view = new RunsTable(main, state.project, app);
  else view = waitForRuns();
  if (state.project && picker.value !== state.project) loadProjects();
}

/** The empty page: look for a first project every few seconds. */
function waitForRuns() {
  replace(
    main,
    h("p", { class: "muted" }, "No runs yet. Log one with waddle.init() or run `waddle demo`."),
  );
  const timer = setTimeout(() => loadProjects().then(() => projectNames.length && show()), 3000);
  return { destroy: () => clearTimeout(timer) };
}

// A ?token= in the address has set the session cookie by now: take it out of the address
// bar, so that a bookmarked or shared view does not carry the token.
if (new URLSearchParams(location.search).has("token")) {
  history.replaceState(null, "", `${location.pathname}${location.hash}`);
}

picker.addEventListener("change", () =>
  app.navigate({ project: picker.value, run: "", compare: [] }),
);
onStateChange(() => show());
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) loadProjects();
});

// With a project in the URL the view starts at once (show() fills the picker alongside).
if (readState().project) show();
else loadProjects().then(show);
