// Runs compared: every metric chart overlays the selected runs, each in its stable colour,
// and the config and summary tables mark the keys whose values differ. Live like a run.

import { getKeys, getRun } from "./api.js";
import { chartKeys, defaultX, xChoices } from "./axis.js";
import { colorsFor } from "./colors.js";
import { chartControls } from "./controls.js";
import { h, liveQueue, replace } from "./dom.js";
import { displayStatus } from "./format.js";
import { RunFold } from "./fold.js";
import { LiveSocket } from "./live.js";
import { CompareMedia } from "./media_section.js";
import { ChartPanel } from "./panel.js";
import { comparisonTable, statusBadge } from "./tables.js";

export class CompareView {
  constructor(parent, runIds, app) {
    this.runIds = runIds;
    this.app = app;
    this.state = app.state;
    this.colors = colorsFor(runIds);
    this.root = h("div", { class: "view compare-view" });
    parent.append(this.root);
    this.onlyDiffering = false;
    this.fold = new RunFold();
    this.liveEvents = liveQueue((items) => items.forEach(([s, r, e]) => this.apply(s, r, e)));
    this.socket = new LiveSocket(
      { runs: runIds },
      {
        onEvents: (stream, run, events) => this.liveEvents.push([stream, run, events]),
        onStatus: (status) => {
          this.liveStatus = status;
          this.toolbar?.setLive(status);
        },
      },
    );
    this.load().catch((error) => {
      replace(this.root, h("p", { class: "error" }, `Could not load the runs: ${error.message}`));
    });
  }

  async load() {
    const loaded = await Promise.all(
      this.runIds.map(async (id) => {
        try {
          const [record, keys] = await Promise.all([getRun(id), getKeys(id)]);
          return { record, keys };
        } catch (error) {
          if (error.status === 404) return null;
          throw error;
        }
      }),
    );
    this.runs = loaded.filter(Boolean).map(({ record, keys }) => ({
      record: this.fold.seed(record),
      keys: keys.metrics,
      id: record.run_id,
      runId: record.run_id,
      label: record.name || record.run_id,
      color: this.colors.get(record.run_id),
      startedAt: record.started_at,
    }));
    this.missing = this.runIds.filter((id) => !this.runs.some((r) => r.id === id));
    this.render();
    this.liveEvents.start();
    this.media.load().catch(() => null);
  }

  render() {
    const records = this.runs.map((run) => run.record);
    const keys = [...new Set(this.runs.flatMap((run) => run.keys))];
    this.x = this.state.x || defaultX(records);
    // Unchosen, each run is drawn on its own step metric: an HF run on train/global_step
    // and a Lightning run on trainer/global_step line up.
    for (const run of this.runs) run.xMode = this.state.x ? undefined : defaultX([run.record]);
    this.toolbar = chartControls(
      this.state,
      {
        onChange: (patch) => this.app.setOptions(patch),
        onReset: () => this.panel.resetZoom(),
        onFilter: (text) => this.panel.setFilter(text),
      },
      { x: this.x, choices: xChoices(keys, records) },
    );
    this.toolbar.setLive(this.liveStatus || "connecting");
    this.legend = h("div", { class: "compare-legend" });
    this.configNode = h("div", {});
    this.summaryNode = h("div", {});
    const differing = h("input", {
      type: "checkbox",
      class: "only-differing",
      onchange: () => {
        this.onlyDiffering = differing.checked;
        this.renderTables();
      },
    });
    const charts = h("section", { class: "section", id: "metrics" }, h("h3", {}, "Metrics"));
    const mediaHost = h("div", {});
    this.media = new CompareMedia(mediaHost, this.runs);
    replace(
      this.root,
      h("h2", {}, `Comparing ${this.runs.length} runs`),
      this.missing.length
        ? h("p", { class: "error" }, `Not found: ${this.missing.join(", ")}`)
        : null,
      this.legend,
      this.toolbar,
      charts,
      mediaHost,
      h(
        "section",
        { class: "section", id: "config" },
        h("h3", {}, "Config"),
        h("label", { class: "inline" }, differing, " only keys that differ"),
        this.configNode,
      ),
      h("section", { class: "section", id: "summary" }, h("h3", {}, "Summary"), this.summaryNode),
    );
    this.panel = new ChartPanel(charts, {
      kind: "metrics",
      sources: this.runs,
      xMode: this.x,
      log: this.state.log,
      smooth: this.state.smooth,
      syncKey: `compare-${this.x}`,
      isChart: (key) => chartKeys([key], records).length > 0,
      onZoom: (min, max) => this.panel.zoomTo(min, max),
      onResetZoom: () => this.panel.resetZoom(),
    });
    this.panel.addKeys(keys);
    this.renderLegend();
    this.renderTables();
  }

  renderLegend() {
    replace(
      this.legend,
      this.runs.map((run) =>
        h(
          "div",
          { class: "legend-run", dataset: { run: run.id } },
          h("span", { class: "swatch", style: { background: run.color } }),
          h(
            "a",
            { href: `#${new URLSearchParams({ project: run.record.project || "", run: run.id })}` },
            run.label,
          ),
          statusBadge(displayStatus(run.record)),
          h(
            "button",
            {
              type: "button",
              class: "remove",
              title: "remove from the comparison",
              onclick: () => this.remove(run.id),
            },
            "×",
          ),
        ),
      ),
    );
  }

  remove(runId) {
    const rest = this.runIds.filter((id) => id !== runId);
    this.app.navigate(rest.length > 1 ? { compare: rest } : { compare: [], run: rest[0] || "" });
  }

  renderTables() {
    const columns = (field) =>
      this.runs.map((run) => ({ label: run.label, color: run.color, values: run.record[field] }));
    replace(
      this.configNode,
      comparisonTable(columns("config"), {
        onlyDiffering: this.onlyDiffering,
        emptyText: "No config.",
      }),
    );
    replace(
      this.summaryNode,
      comparisonTable(columns("summary"), { emptyText: "No summary values." }),
    );
  }

  apply(stream, runId, events) {
    const run = this.runs.find((r) => r.id === runId);
    if (!run) return;
    const { summary, config, status } = run.record;
    this.fold.apply(stream, runId, events);
    this.panel.addEvents(runId, stream, events);
    this.media.addEvents(runId, events);
    if (summary !== run.record.summary || config !== run.record.config) this.renderTables();
    if (status !== run.record.status) this.renderLegend();
  }

  setOptions(patch) {
    if ("x" in patch) return false;
    this.panel?.setOptions(patch);
    return true;
  }

  destroy() {
    this.socket.close();
    this.panel?.destroy();
    this.media?.destroy();
    this.root.remove();
  }
}
