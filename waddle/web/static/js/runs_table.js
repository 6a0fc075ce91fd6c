// The runs of a project: sortable by any column, filtered by text, tag, status and config
// value, with chosen config and summary columns and a multi-selection to compare. Rows
// update in place from the project's live events; a new run appears as it starts.

import { listRuns } from "./api.js";
import { colorsFor } from "./colors.js";
import { h, liveQueue, replace, setText } from "./dom.js";
import { RunFold } from "./fold.js";
import { displayStatus, fmtValue } from "./format.js";
import { LiveSocket } from "./live.js";
import { statusBadge, tagChips } from "./tables.js";
import {
  STATUSES,
  columnsFor,
  defaultColumns,
  withMoreConfig,
  keysOf,
  visibleRuns,
} from "./runs_model.js";

const ROWS_PER_PAGE = 200;

export class RunsTable {
  /** app: {state, navigate(patch)} */
  constructor(parent, project, app) {
    this.project = project;
    this.app = app;
    this.fold = new RunFold();
    this.runs = this.fold.runs;
    this.rows = new Map();
    this.selected = new Set();
    this.sort = { column: "started", descending: true };
    this.filters = { text: "", status: "", tag: "", configKey: "", configValue: "" };
    this.root = h("div", { class: "view runs-view" });
    parent.append(this.root);
    this.ready = false;
    this.liveEvents = liveQueue((items) => {
      const ids = items.flatMap(([stream, runId, events]) => this.apply(stream, runId, events));
      this.refreshRows(new Set(ids));
    });
    this.socket = new LiveSocket(
      { project },
      {
        onEvents: (stream, runId, events) => this.liveEvents.push([stream, runId, events]),
        onStatus: (status) => this.setLive(status),
        onReconnect: () => this.reload(),
      },
    );
    this.ticker = setInterval(() => this.tick(), 5000);
    this.moreObserver = new IntersectionObserver(
      (entries) => {
        if (entries.some((entry) => entry.isIntersecting)) this.renderMore();
      },
      { rootMargin: "400px 0px" },
    );
    this.reload();
  }

  async reload() {
    try {
      const runs = await listRuns(this.project);
      for (const run of runs) this.fold.seed({ ...this.runs.get(run.run_id), ...run });
    } catch (error) {
      replace(this.root, h("p", { class: "error" }, `Could not load runs: ${error.message}`));
      return;
    }
    if (!this.ready) {
      this.ready = true;
      this.columns = this.chosenColumns();
      this.renderFrame();
      this.liveEvents.start();
    }
    this.renderOptions();
    this.renderBody();
  }

  /** The chosen columns: saved for this project in the browser, else the defaults. */
  chosenColumns() {
    try {
      const saved = JSON.parse(localStorage.getItem(`waddle.columns.${this.project}`));
      if (Array.isArray(saved?.config) && Array.isArray(saved?.summary)) return saved;
    } catch {
      /* the defaults then */
    }
    return defaultColumns([...this.runs.values()]);
  }

  keysOf(field) {
    return keysOf(this.runs.values(), field);
  }

  allColumns() {
    return columnsFor(this.columns);
  }

  renderFrame() {
    const input = (cls, placeholder, field) =>
      h("input", {
        type: "search",
        class: cls,
        placeholder,
        oninput: (e) => {
          this.filters[field] = e.target.value;
          this.renderBody();
        },
      });
    const select = (cls, field, label) =>
      h("select", {
        class: cls,
        "aria-label": label,
        onchange: (e) => {
          this.filters[field] = e.target.value;
          this.renderBody();
        },
      });
    this.statusSelect = select("status-filter", "status", "status");
    this.tagSelect = select("tag-filter", "tag", "tag");
    this.configKeySelect = select("config-key-filter", "configKey", "config key");
    this.columnsPicker = h("details", { class: "columns-picker" });
    this.moreConfig = h("button", {
      type: "button",
      class: "more-config",
      onclick: () => this.setColumns(withMoreConfig([...this.runs.values()], this.columns)),
    });
    this.count = h("span", { class: "muted run-count" });
    this.selection = h("span", { class: "selection" });
    this.compareButton = h(
      "button",
      { type: "button", class: "compare-button", disabled: true, onclick: () => this.compare() },
      "Compare",
    );
    this.head = h("thead", {});
    this.body = h("tbody", {});
    this.live = h("span", { class: "live-status" });
    this.setLive(this.liveStatus || "connecting");
    replace(
      this.root,
      h(
        "div",
        { class: "toolbar" },
        input("text-filter", "Filter by name, id or tag", "text"),
        this.statusSelect,
        this.tagSelect,
        this.configKeySelect,
        input("config-value-filter", "value, =x, >x, <x", "configValue"),
        this.columnsPicker,
        this.moreConfig,
        this.live,
      ),
      h("div", { class: "toolbar" }, this.count, this.selection, this.compareButton),
      h("div", { class: "table-wrap" }, h("table", { class: "runs" }, this.head, this.body)),
    );
  }

  setLive(status) {
    this.liveStatus = status;
    if (!this.live) return;
    setText(this.live, status);
    this.live.dataset.status = status;
  }

  renderOptions() {
    const options = (node, values, all) => {
      const current = node.value;
      replace(
        node,
        h("option", { value: "" }, all),
        values.map((v) => h("option", { value: v, selected: v === current }, v)),
      );
    };
    options(this.statusSelect, STATUSES, "any status");
    options(
      this.tagSelect,
      [...new Set([...this.runs.values()].flatMap((r) => r.tags || []))].sort(),
      "any tag",
    );
    options(this.configKeySelect, this.keysOf("config").sort(), "config key…");
    this.renderPicker();
  }

  renderPicker() {
    const group = (field, title) =>
      h(
        "fieldset",
        {},
        h("legend", {}, title),
        this.keysOf(field).map((key) =>
          h(
            "label",
            {},
            h("input", {
              type: "checkbox",
              checked: this.columns[field].includes(key),
              onchange: (e) => this.toggleColumn(field, key, e.target.checked),
            }),
            ` ${key}`,
          ),
        ),
      );
    replace(
      this.columnsPicker,
      h("summary", {}, "Columns"),
      h("div", { class: "picker-body" }, group("summary", "metrics"), group("config", "config")),
    );
    const hidden = this.keysOf("config").length - this.columns.config.length;
    this.moreConfig.hidden = hidden <= 0;
    setText(this.moreConfig, `More config (${hidden} hidden)`);
  }

  toggleColumn(field, key, on) {
    const keys = this.columns[field].filter((k) => k !== key);
    if (on) keys.push(key);
    this.setColumns({ ...this.columns, [field]: keys });
  }

  /** Show these columns, and remember them for the project in this browser. */
  setColumns(columns) {
    this.columns = columns;
    localStorage.setItem(`waddle.columns.${this.project}`, JSON.stringify(this.columns));
    this.renderPicker();
    this.renderBody();
  }

  renderHead(columns) {
    const all = h("input", {
      type: "checkbox",
      class: "select-all",
      "aria-label": "select all shown",
      onchange: (e) => {
        for (const run of this.shown) {
          if (e.target.checked) this.selected.add(run.run_id);
          else this.selected.delete(run.run_id);
        }
        this.renderBody();
      },
    });
    all.checked = this.shown.length > 0 && this.shown.every((r) => this.selected.has(r.run_id));
    replace(
      this.head,
      h(
        "tr",
        {},
        h("th", { class: "select" }, all),
        columns.map((column) => {
          const sorted = this.sort.column === column.id;
          const arrow = sorted ? (this.sort.descending ? " ▼" : " ▲") : "";
          return h(
            "th",
            {
              class: `sortable ${column.field || ""} ${sorted ? "sorted" : ""}`,
              dataset: { column: column.id },
              title: column.field ? `${column.field}: ${column.label}` : "sort",
              "aria-sort": sorted ? (this.sort.descending ? "descending" : "ascending") : "none",
              tabindex: "0",
              onclick: () => this.sortBy(column.id),
              onkeydown: (e) => {
                if (e.key === "Enter" || e.key === " ") {
                  e.preventDefault();
                  this.sortBy(column.id);
                }
              },
            },
            column.label,
            arrow,
          );
        }),
      ),
    );
  }

  sortBy(columnId) {
    if (this.sort.column === columnId) this.sort.descending = !this.sort.descending;
    else this.sort = { column: columnId, descending: columnId === "started" };
    this.renderBody();
  }

  renderBody() {
    if (!this.ready) return;
    const columns = this.allColumns();
    this.colors = colorsFor(this.selected);
    this.shown = visibleRuns([...this.runs.values()], this.filters, this.sort, columns);
    this.renderHead(columns);
    this.rows.clear();
    this.body.replaceChildren();
    this.rendered = 0;
    if (!this.runs.size) {
      this.body.append(
        h(
          "tr",
          {},
          h(
            "td",
            { colspan: String(columns.length + 1), class: "muted" },
            "No runs in this project yet. Log one with waddle.init(project=...) or run `waddle demo`.",
          ),
        ),
      );
    }
    this.renderMore(columns);
    setText(this.count, `${this.shown.length} of ${this.runs.size} runs`);
    this.renderSelection();
  }

  /**
   * Rows are added a page at a time as the table scrolls: laying out a thousand rows at
   * once costs the browser far more than building them.
   */
  renderMore(columns = this.allColumns()) {
    this.more?.remove();
    const end = Math.min(this.shown.length, this.rendered + ROWS_PER_PAGE);
    const rows = [];
    for (let index = this.rendered; index < end; index += 1) {
      rows.push(this.row(this.shown[index], columns, index));
    }
    this.rendered = end;
    this.body.append(...rows);
    if (end >= this.shown.length) return;
    this.more = h(
      "tr",
      { class: "more" },
      h(
        "td",
        { colspan: String(columns.length + 1), class: "muted" },
        h("button", { type: "button", onclick: () => this.renderMore() }, "Show more"),
        ` ${end} of ${this.shown.length} shown`,
      ),
    );
    this.body.append(this.more);
    this.moreObserver.observe(this.more);
  }

  row(run, columns, index) {
    const id = run.run_id;
    const box = h("input", {
      type: "checkbox",
      class: "select-run",
      checked: this.selected.has(id),
      "aria-label": "select",
      onclick: (e) => this.toggle(id, index, e.target.checked, e.shiftKey),
    });
    const cells = columns.map((column) => {
      const cell = h("td", { class: column.num ? "num" : "", dataset: { column: column.id } });
      if (column.id === "name") {
        const color = this.selected.has(id) ? this.colors.get(id) : "transparent";
        cell.append(
          h("span", { class: "swatch", style: { background: color } }),
          h(
            "a",
            {
              href: `#${new URLSearchParams({ project: this.project, run: id })}`,
              class: "run-link",
              title: id,
            },
            run.name || id,
          ),
        );
      } else if (column.id === "status") cell.append(statusBadge(displayStatus(run)));
      else if (column.id === "tags") cell.append(...tagChips(run.tags));
      else cell.append(column.text ? column.text(run) : fmtValue(column.value(run)));
      return cell;
    });
    const tr = h(
      "tr",
      { dataset: { run: id }, class: this.selected.has(id) ? "selected" : "" },
      h("td", { class: "select" }, box),
      cells,
    );
    tr.__index = index;
    this.rows.set(id, tr);
    return tr;
  }

  toggle(id, index, on, range) {
    if (range && this.lastIndex !== undefined) {
      const [a, b] = [Math.min(index, this.lastIndex), Math.max(index, this.lastIndex)];
      for (const run of this.shown.slice(a, b + 1)) {
        if (on) this.selected.add(run.run_id);
        else this.selected.delete(run.run_id);
      }
      this.lastIndex = index;
      this.renderBody();
      return;
    }
    this.lastIndex = index;
    if (on) this.selected.add(id);
    else this.selected.delete(id);
    const before = this.colors;
    this.colors = colorsFor(this.selected);
    const changed = [...this.selected, id].filter(
      (runId) => before.get(runId) !== this.colors.get(runId),
    );
    this.refreshRows(new Set(changed));
    this.renderSelection();
  }

  renderSelection() {
    const n = this.selected.size;
    setText(this.selection, n ? `${n} selected` : "Select runs to compare them.");
    this.compareButton.disabled = n < 1;
    setText(this.compareButton, n === 1 ? "Open" : `Compare${n > 1 ? ` ${n}` : ""}`);
  }

  compare() {
    const ids = [...this.selected].filter((id) => this.runs.has(id));
    if (ids.length === 1) this.app.navigate({ run: ids[0], compare: [] });
    else if (ids.length > 1) this.app.navigate({ compare: ids, run: "" });
  }

  /** Fold live events into the runs (fold.js); returns the ids of runs whose row changed. */
  apply(stream, runId, events) {
    if (!this.runs.has(runId)) this.added = true;
    this.fold.apply(stream, runId, events);
    return [runId];
  }

  refreshRows(ids) {
    if (this.added) {
      this.added = false;
      this.renderOptions();
      this.renderBody();
      return;
    }
    const columns = this.allColumns();
    for (const id of ids) {
      const old = this.rows.get(id);
      if (!old) continue;
      old.replaceWith(this.row(this.runs.get(id), columns, old.__index));
    }
  }

  /** Running rows change on their own: duration grows, a silent run turns stale. */
  tick() {
    if (!this.ready) return;
    const ids = [...this.runs.values()].filter((r) => (r.status || "running") === "running");
    this.refreshRows(new Set(ids.map((r) => r.run_id)));
  }

  destroy() {
    clearInterval(this.ticker);
    this.moreObserver.disconnect();
    this.socket.close();
    this.root.remove();
  }
}
