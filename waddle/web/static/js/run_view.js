// One run: its metric charts grouped by prefix, system charts (one series per process),
// summary, config, the run context and captured console output, all kept live.

import { getConsole, getKeys, getRun } from "./api.js";
import { chartKeys, defaultX, xChoices } from "./axis.js";
import { chartControls } from "./controls.js";
import { PALETTE, colorOf } from "./colors.js";
import { h, liveQueue, replace } from "./dom.js";
import { displayStatus, fmtDateTime, fmtDuration, fmtNumber } from "./format.js";
import { RunFold, rankOfStream } from "./fold.js";
import { LiveSocket } from "./live.js";
import { ArtifactsSection } from "./artifacts_view.js";
import { MediaSection } from "./media_section.js";
import { ChartPanel } from "./panel.js";
import { contextView, keyValueTable, statusBadge, tagChips } from "./tables.js";

const CONSOLE_PAGE = 2000;

export class RunView {
  /** app: {state, navigate(patch), setOptions(patch)} */
  constructor(parent, runId, app) {
    this.runId = runId;
    this.app = app;
    this.state = app.state;
    this.root = h("div", { class: "view run-view" });
    parent.append(this.root);
    this.consoleAfter = new Map();
    this.fold = new RunFold();
    this.liveEvents = liveQueue((items) => items.forEach(([s, r, e]) => this.apply(s, r, e)));
    this.socket = new LiveSocket(
      { runs: [runId] },
      {
        onEvents: (stream, run, events) => this.liveEvents.push([stream, run, events]),
        onStatus: (status) => {
          this.liveStatus = status;
          this.toolbar?.setLive(status);
        },
        onReconnect: () => this.refreshRecord(),
      },
    );
    this.ticker = setInterval(() => this.renderMeta(), 1000);
    this.load().catch((error) => this.fail(error));
  }

  async load() {
    const [record, keys] = await Promise.all([getRun(this.runId), getKeys(this.runId)]);
    this.record = this.fold.seed(record);
    this.render(keys);
    this.liveEvents.start();
    // Media and artifacts load alongside; a server without them leaves the sections hidden.
    this.media.load().catch(() => null);
    this.artifacts.load().catch(() => null);
    await this.loadConsole();
  }

  fail(error) {
    const text =
      error.status === 404
        ? `No run ${this.runId} here (yet). Runs appear once the server has read their log.`
        : `Could not load run ${this.runId}: ${error.message}`;
    replace(this.root, h("p", { class: "error" }, text));
  }

  async refreshRecord() {
    try {
      this.record = this.fold.seed({ ...this.record, ...(await getRun(this.runId)) });
      this.renderMeta();
      this.renderTables();
    } catch {
      /* the next reconnect tries again */
    }
  }

  render(keys) {
    const run = this.record;
    const color = colorOf(run.run_id);
    this.title = h("h2", { class: "run-name" }, run.name || run.run_id);
    this.statusNode = h("span", {});
    this.meta = h("div", { class: "run-meta" });
    this.x = this.state.x || defaultX([run]);
    this.toolbar = chartControls(
      this.state,
      {
        onChange: (patch) => this.app.setOptions(patch),
        onReset: () => this.resetZoom(),
        onFilter: (text) => this.panels().forEach((p) => p.setFilter(text)),
      },
      { x: this.x, choices: xChoices(keys.metrics, [run]) },
    );
    this.toolbar.setLive(this.liveStatus || "connecting");
    const sources = [
      {
        id: run.run_id,
        runId: run.run_id,
        label: run.name || run.run_id,
        color,
        startedAt: run.started_at,
      },
    ];
    this.metricsNode = h("section", { class: "section", id: "metrics" }, h("h3", {}, "Metrics"));
    this.systemNode = h("section", { class: "section", id: "system" }, h("h3", {}, "System"));
    this.summaryNode = h("div", {});
    this.configNode = h("div", {});
    this.consoleNode = h("pre", { class: "console" });
    const mediaHost = h("div", {});
    this.media = new MediaSection(mediaHost, run.run_id);
    this.artifacts = new ArtifactsSection(mediaHost, run.run_id, run.project);
    this.consoleSection = h(
      "section",
      { class: "section", id: "console", hidden: true },
      h("h3", {}, "Console"),
      this.consoleNode,
    );
    replace(
      this.root,
      h(
        "div",
        { class: "run-head" },
        h(
          "div",
          { class: "title-row" },
          h("span", { class: "swatch", style: { background: color } }),
          this.title,
          this.statusNode,
        ),
        this.meta,
      ),
      this.toolbar,
      this.metricsNode,
      this.systemNode,
      mediaHost,
      h(
        "div",
        { class: "columns" },
        h("section", { class: "section", id: "summary" }, h("h3", {}, "Summary"), this.summaryNode),
        h("section", { class: "section", id: "config" }, h("h3", {}, "Config"), this.configNode),
      ),
      h("section", { class: "section", id: "context" }, h("h3", {}, "Context"), contextView(run)),
      this.consoleSection,
    );
    this.metrics = this.panel("metrics", this.metricsNode, sources);
    this.metrics.addKeys(keys.metrics);
    const ranks = (run.streams || []).map((s) => s.rank);
    const systemSources = (ranks.length ? ranks : [0]).map((rank) => ({
      id: `${run.run_id}#${rank}`,
      runId: run.run_id,
      rank,
      label: ranks.length > 1 ? `rank ${rank}` : run.name || run.run_id,
      color: ranks.length > 1 ? undefined : color,
      startedAt: run.started_at,
    }));
    systemSources.forEach((s, i) => {
      s.color ||= PALETTE[i % PALETTE.length];
    });
    this.system = this.panel("system", this.systemNode, systemSources);
    this.system.addKeys(keys.system);
    this.renderMeta();
    this.renderTables();
  }

  panel(kind, parent, sources) {
    const panel = new ChartPanel(parent, {
      kind,
      sources,
      xMode: this.x,
      log: this.state.log,
      smooth: this.state.smooth,
      syncKey: `${kind}-${this.x}`,
      isChart: (key) => kind === "system" || chartKeys([key], [this.record]).length > 0,
      emptyText: kind === "system" ? "No system metrics recorded." : "No metrics logged yet.",
      onZoom: (min, max) => panel.zoomTo(min, max),
      onResetZoom: () => panel.resetZoom(),
    });
    return panel;
  }

  panels() {
    return [this.metrics, this.system].filter(Boolean);
  }

  renderMeta() {
    const run = this.record;
    if (!run || !this.meta) return;
    const status = displayStatus(run);
    if (this.statusNode.dataset.status !== status) {
      this.statusNode.dataset.status = status;
      replace(this.statusNode, statusBadge(status));
    }
    const now = Date.now() / 1000;
    const end = run.finished_at ?? (status === "running" ? now : run.updated_at);
    const parts = [
      ["id", run.run_id],
      ["project", run.project],
      ["started", fmtDateTime(run.started_at)],
      ["duration", fmtDuration(end - run.started_at)],
      ["last step", run.last_step == null ? "" : fmtNumber(run.last_step)],
      ["group", run.group_name],
      ["job type", run.job_type],
      ["exit code", run.exit_code],
    ].filter(([, value]) => value !== null && value !== undefined && value !== "");
    const items = parts.map(([label, value]) =>
      h(
        "span",
        { class: "meta-item", dataset: { field: label } },
        h("span", { class: "muted" }, `${label} `),
        String(value),
      ),
    );
    const key = JSON.stringify([parts, run.tags, run.notes]);
    if (this.meta.dataset.key === key) return;
    this.meta.dataset.key = key;
    replace(
      this.meta,
      items,
      tagChips(run.tags),
      run.notes ? h("div", { class: "notes" }, run.notes) : null,
    );
  }

  renderTables() {
    replace(this.summaryNode, keyValueTable(this.record.summary, "No summary values."));
    replace(this.configNode, keyValueTable(this.record.config, "No config."));
  }

  /** Live events of the run's streams (fold.js), batched per animation frame. */
  apply(stream, runId, events) {
    const { summary, config } = this.record;
    this.fold.apply(stream, runId, events);
    const lines = events.filter((event) => event.type === "console");
    if (lines.length) {
      const rows = lines.map((e) => ({ seq: e.seq, source: e.stream, text: e.text }));
      this.addConsole(rows, rankOfStream(stream));
    }
    this.metrics.addEvents(runId, stream, events);
    this.system.addEvents(runId, stream, events);
    this.media.addEvents(events);
    this.artifacts.addEvents(events);
    this.renderMeta();
    if (summary !== this.record.summary || config !== this.record.config) this.renderTables();
  }

  async loadConsole() {
    const ranks = (this.record.streams || []).map((s) => s.rank);
    for (const rank of ranks.length ? ranks : [0]) {
      const page = await getConsole(this.runId, { rank, limit: CONSOLE_PAGE });
      this.addConsole(page.lines, rank);
    }
  }

  addConsole(lines, rank) {
    const after = this.consoleAfter.get(rank) ?? -1;
    const fresh = lines.filter((line) => line.seq > after);
    if (!fresh.length) return;
    this.consoleAfter.set(rank, fresh[fresh.length - 1].seq);
    this.consoleSection.hidden = false;
    const stick =
      this.consoleNode.scrollTop + this.consoleNode.clientHeight >=
      this.consoleNode.scrollHeight - 4;
    for (const line of fresh) {
      this.consoleNode.append(h("span", { class: `console-${line.source}` }, line.text));
    }
    if (stick) this.consoleNode.scrollTop = this.consoleNode.scrollHeight;
  }

  setOptions(patch) {
    if ("x" in patch) return false;
    for (const panel of this.panels()) panel.setOptions(patch);
    return true;
  }

  resetZoom() {
    for (const panel of this.panels()) panel.resetZoom();
  }

  destroy() {
    clearInterval(this.ticker);
    this.socket.close();
    for (const panel of this.panels()) panel.destroy();
    this.media?.destroy();
    this.artifacts?.destroy();
    this.root.remove();
  }
}
