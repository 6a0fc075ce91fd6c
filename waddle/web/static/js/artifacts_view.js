// A run's saved files (download links) and its artifacts: the versions it logged and
// used, and for each artifact its lineage: every version, the run that produced it and
// the runs that used it, each a link to that run.

import { getArtifact, getRunArtifacts } from "./api.js";
import { h, replace } from "./dom.js";
import { fmtBytes, fmtValue } from "./format.js";
import { blobLink } from "./media_panels.js";

const ARTIFACT_EVENTS = new Set(["artifact", "artifact_version", "artifact_use"]);
const RELOAD_DELAY_MS = 500;
const HOLD_MS = 10_000; // how long an artifact event is waited for in the tables

function runLink(project, runId, current) {
  if (!runId) return "";
  if (runId === current) return h("span", { class: "this-run" }, "this run");
  const href = `#${new URLSearchParams({ project: project || "", run: runId })}`;
  return h("a", { class: "run-link", href, dataset: { run: runId } }, runId);
}

function filesTable(files) {
  if (!files.length) return null;
  return h(
    "table",
    { class: "runs run-files" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["file", "kind", "size", "sha256"].map((c) => h("th", {}, c)),
      ),
    ),
    h(
      "tbody",
      {},
      files.map((file) => {
        const name = file.name || file.path;
        const base = String(name).split("/").pop();
        return h(
          "tr",
          { dataset: { path: name } },
          h("td", {}, file.sha256 ? blobLink(file.sha256, base, name) : name),
          h("td", {}, file.kind || ""),
          h("td", { class: "num" }, fmtBytes(file.size)),
          h("td", { class: "muted mono" }, String(file.sha256 || "").slice(0, 12)),
        );
      }),
    ),
  );
}

function lineageTable(artifact, run) {
  const logged = new Set(run.logged.filter((a) => a.name === artifact.name).map((a) => a.version));
  const used = new Set(run.used.filter((a) => a.name === artifact.name).map((a) => a.version));
  const header = ["version", "aliases", "size", "files", "produced by", "used by", "metadata"];
  return h(
    "table",
    { class: "runs lineage", dataset: { artifact: artifact.name } },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        header.map((c) => h("th", {}, c)),
      ),
    ),
    h(
      "tbody",
      {},
      artifact.versions.map((version) =>
        h(
          "tr",
          {
            dataset: { version: version.version },
            class: logged.has(version.version) || used.has(version.version) ? "selected" : null,
          },
          h("td", {}, `v${version.version}`),
          h(
            "td",
            {},
            (version.aliases || []).map((alias) => h("span", { class: "tag" }, alias)),
          ),
          h("td", { class: "num" }, fmtBytes(version.size)),
          h("td", { class: "num" }, fmtValue(version.files)),
          h("td", { class: "produced-by" }, runLink(run.project, version.run_id, run.runId)),
          h(
            "td",
            { class: "used-by" },
            (version.used_by || []).flatMap((id, i) => [
              i ? ", " : null,
              runLink(run.project, id, run.runId),
            ]),
          ),
          h(
            "td",
            { class: "muted" },
            Object.keys(version.metadata || {}).length ? fmtValue(version.metadata) : "",
          ),
        ),
      ),
    ),
  );
}

/**
 * Whether a run's files and artifacts (``getRunArtifacts``) hold an artifact event: a
 * row of its name and time. Name and version alone would take a row of an earlier event
 * for it (the same content logged again to move an alias, a file saved unchanged).
 */
function holds(own, event) {
  const rows = { artifact: own.files, artifact_version: own.logged }[event.type] ?? own.used;
  return (rows || []).some((row) => row.name === event.name && row.ts === event.ts);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The files and artifacts section of a run view; hidden while the run has neither. */
export class ArtifactsSection {
  constructor(parent, runId, project) {
    this.runId = runId;
    this.project = project;
    this.controller = new AbortController();
    this.body = h("div", {});
    this.node = h(
      "section",
      { class: "section", id: "artifacts", hidden: true },
      h("h3", {}, "Files and artifacts"),
      this.body,
    );
    parent.append(this.node);
  }

  /** The first paint. */
  load() {
    return this.refresh();
  }

  /**
   * Fetch the run's files and artifacts and paint them if they changed, after any fetch
   * begun before (the first load included): an older answer never paints over a newer.
   */
  refresh() {
    const previous = this.queue || Promise.resolve();
    this.queue = previous.catch(() => null).then(() => this.fetchAndPaint());
    return this.queue;
  }

  async fetchAndPaint() {
    const own = await getRunArtifacts(this.runId, this.controller.signal);
    const shown = JSON.stringify(own);
    if (shown !== this.shown) {
      await this.render(own);
      this.shown = shown; // painted: a render that failed is tried again next time
    }
    return own;
  }

  async render(own) {
    const signal = this.controller.signal;
    const logged = own.logged || [];
    const used = own.used || [];
    const names = [...new Set([...logged, ...used].map((a) => a.name))].sort();
    const artifacts = await Promise.all(names.map((name) => getArtifact(name, signal)));
    const run = { runId: this.runId, project: this.project, logged, used };
    const files = own.files || [];
    this.node.hidden = !files.length && !names.length;
    replace(
      this.body,
      files.length ? h("h4", {}, "Files") : null,
      filesTable(files),
      artifacts.map((artifact) =>
        h(
          "div",
          { class: "artifact", dataset: { artifact: artifact.name } },
          h(
            "h4",
            {},
            artifact.name,
            h("span", { class: "muted" }, ` ${artifact.type || ""}`),
            logged.some((a) => a.name === artifact.name)
              ? h("span", { class: "tag" }, "logged")
              : null,
            used.some((a) => a.name === artifact.name) ? h("span", { class: "tag" }, "used") : null,
          ),
          lineageTable(artifact, run),
        ),
      ),
    );
  }

  /**
   * Live: an artifact event of this run reloads the section until the server's tables
   * hold it (they may read the log a moment after the page got it, and two events in a
   * row may land in two commits), every ``RELOAD_DELAY_MS``, for ``HOLD_MS`` at most
   * after that event. One reload loop runs at a time.
   */
  addEvents(events) {
    const until = Date.now() + HOLD_MS;
    const fresh = events.filter((event) => ARTIFACT_EVENTS.has(event.type));
    if (!fresh.length) return;
    this.awaited = [...(this.awaited || []), ...fresh.map((event) => ({ event, until }))];
    if (!this.reloading) {
      this.reloading = this.reloadUntilHeld().finally(() => {
        this.reloading = null;
      });
    }
  }

  async reloadUntilHeld() {
    while (this.awaited.length) {
      try {
        const own = await this.refresh();
        this.awaited = this.awaited.filter(({ event }) => !holds(own, event));
      } catch {
        if (this.controller.signal.aborted) return; // the view was left
        // The server away, or a render that failed: tried again while events are awaited.
      }
      const now = Date.now();
      this.awaited = this.awaited.filter(({ until }) => until > now);
      if (this.awaited.length) await sleep(RELOAD_DELAY_MS);
    }
  }

  destroy() {
    this.controller.abort();
  }
}
