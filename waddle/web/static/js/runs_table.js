// The runs of a project, a page at a time: the server filters (text, tag, status, config
// value), sorts (any column, config and summary ones included) and pages them, so the
// table costs the same at ten thousand runs as at ten. Rows of the page update in place
// from the project's live events; a run that starts reloads the page (at most once a
// second), so a new run appears where the sort puts it.

import { getFacets, listRuns } from "./api.js";
import { colorsFor } from "./colors.js";
import { h, liveQueue, replace, setText } from "./dom.js";
import { RunFold } from "./fold.js";
import { displayStatus, fmtValue } from "./format.js";
import { LiveSocket } from "./live.js";
import { statusBadge, tagChips } from "./tables.js";
import {
  STATUSES,
  columnsFor,
  configKeys,
  defaultColumns,
  facetKeys,
  keysOf,
  runsQuery,
  withMoreConfig,
} from "./runs_model.js";

export const PAGE_SIZE = 100;
const FILTER_DELAY_MS = 250;
const RELOAD_DELAY_MS = 1000;
// The menus follow new runs more slowly: /api/facets walks every run of the project.
const FACETS_DELAY_MS = 10_000;

export class RunsTable {
  /** app: {state, navigate(patch)} */
  constructor(parent, project, app) {
    this.project = project;
    this.app = app;
    this.fold = new RunFold();
    this.runs = this.fold.runs;
    this.shown = [];
    this.total = 0;
    this.offset = 0;
    this.facets = null;
    this.rows = new Map();
    this.selected = new Set();
    this.sort = { column: "started", descending: true };
    this.filters = { text: "", status: "", tag: "", configKey: "", configValue: "" };
    this.root = h("div", { class: "view runs-view" });
    parent.append(this.root);
    this.ready = false;
    this.request = null;
    this.liveEvents = liveQueue((items) => {
      const ids = items.flatMap(([stream, runId, events]) => this.apply(stream, runId, events));
      this.refreshRows(new Set(ids));
    });
    this.socket = new LiveSocket(
      { project },
      {
        onEvents: (stream, runId, events) => this.liveEvents.push([stream, runId, events]),
        onStatus: (status) => this.setLive(status),
        onReconnect: () => this.reloadSoon(0),
      },
    );
    this.ticker = setInterval(() => this.tick(), 5000);
    this.reload();
  }

  /** Fetch the current page (a newer request cancels an older one) and draw it. */
  async reload() {
    this.request?.abort();
    const request = new AbortController();
    this.request = request;
    const columns = this.ready ? this.allColumns() : columnsFor({ config: [], summary: [] });
    const query = runsQuery(this.project, this.filters, this.sort, columns, {
      offset: this.offset,
      limit: PAGE_SIZE,
    });
    let page;
    try {
      page = await listRuns(query, request.signal);
    } catch (error) {
      if (request.signal.aborted) return;
      this.request = null;
      const message = `Could not load runs: ${error.message}`;
      if (!this.ready) replace(this.root, h("p", { class: "error" }, message));
      else {
        setText(this.count, message);
        delete this.table.dataset.loading;
      }
      return;
    }
    if (this.request !== request) return;
    this.request = null;
    if (page.runs.length === 0 && page.total > 0 && this.offset > 0) {
      this.offset = Math.max(0, page.total - PAGE_SIZE);
      this.reload();
      return;
    }
    this.fold = new RunFold();
    this.runs = this.fold.runs;
    this.shown = page.runs.map((run) => this.fold.seed(run));
    this.total = page.total;
    this.offset = page.offset;
    if (!this.ready) {
      this.ready = true;
      this.columns = this.chosenColumns();
      this.renderFrame();
      this.renderOptions();
      this.liveEvents.start();
      // After the first page is painted: the facets walk every run's config and summary,
      // and on a busy machine that work would delay the paint it is not needed for.
      requestAnimationFrame(() => setTimeout(() => this.loadFacets(), 0));
    }
    this.renderBody();
  }

  /** Reload after a change of filter, sort or page; the table says it is loading till then. */
  requery(delay = 0) {
    if (this.table) this.table.dataset.loading = "true";
    this.reloadSoon(delay, true);
  }

  reloadSoon(delay = RELOAD_DELAY_MS, replaceTimer = false) {
    if (this.reloadTimer && !replaceTimer) return;
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => {
      this.reloadTimer = 0;
      this.reload();
    }, delay);
  }

  /** The menus: the project's tags and config and summary keys, all runs considered. */
  async loadFacets() {
    try {
      this.facets = await getFacets(this.project);
    } catch {
      return; // the menus keep what the page's runs offer
    }
    if (this.ready) this.renderOptions();
  }

  /** The chosen columns: saved for this project in the browser, else the defaults. */
  chosenColumns() {
    try {
      const saved = JSON.parse(localStorage.getItem(`waddle.columns.${this.project}`));
      if (Array.isArray(saved?.config) && Array.isArray(saved?.summary)) return saved;
    } catch {
      /* the defaults then */
    }
    return defaultColumns(this.shown);
  }

  /** A field's keys: the project's once its facets came, the page's until then. */
  keysOf(field) {
    return this.facets ? facetKeys(this.facets, field) : keysOf(this.shown, field);
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
          this.offset = 0;
          this.requery(FILTER_DELAY_MS);
        },
      });
    const select = (cls, field, label) =>
      h("select", {
        class: cls,
        "aria-label": label,
        onchange: (e) => {
          this.filters[field] = e.target.value;
          this.offset = 0;
          this.requery();
        },
      });
    this.statusSelect = select("status-filter", "status", "status");
    this.tagSelect = select("tag-filter", "tag", "tag");
    this.configKeySelect = select("config-key-filter", "configKey", "config key");
    this.columnsPicker = h("details", { class: "columns-picker" });
    this.moreConfig = h("button", {
      type: "button",
      class: "more-config",
      onclick: () => this.setColumns(withMoreConfig(this.facets, this.columns)),
    });
    this.count = h("span", { class: "muted run-count" });
    const pageButton = (cls, label, text, step) =>
      h(
        "button",
        { type: "button", class: cls, "aria-label": label, onclick: () => this.turn(step) },
        text,
      );
    this.previous = pageButton("page-previous", "previous page", "‹ Prev", -1);
    this.next = pageButton("page-next", "next page", "Next ›", 1);
    this.selection = h("span", { class: "selection" });
    this.compareButton = h(
      "button",
      { type: "button", class: "compare-button", disabled: true, onclick: () => this.compare() },
      "Compare",
    );
    this.head = h("thead", {});
    this.body = h("tbody", {});
    this.table = h("table", { class: "runs" }, this.head, this.body);
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
      h(
        "div",
        { class: "toolbar" },
        h("span", { class: "pager" }, this.previous, this.count, this.next),
        this.selection,
        this.compareButton,
      ),
      h("div", { class: "table-wrap" }, this.table),
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
    const tags = this.facets?.tags || [...new Set(this.shown.flatMap((r) => r.tags || []))];
    options(this.tagSelect, [...tags].sort(), "any tag");
    options(this.configKeySelect, [...this.keysOf("config")].sort(), "config key…");
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
    const hidden = configKeys(this.facets).filter((k) => !this.columns.config.includes(k)).length;
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
    if (this.allColumns().some((column) => column.id === this.sort.column)) this.renderBody();
    else this.sortBy("started");
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
    this.offset = 0;
    this.renderHead(this.allColumns());
    this.requery();
  }

  /** Go a page forward (1) or back (-1). */
  turn(step) {
    const offset = this.offset + step * PAGE_SIZE;
    if (offset < 0 || offset >= this.total) return;
    this.offset = offset;
    this.requery();
  }

  filtered() {
    const f = this.filters;
    return Boolean(f.text.trim() || f.status || f.tag || f.configKey);
  }

  renderBody() {
    if (!this.ready) return;
    const columns = this.allColumns();
    this.colors = colorsFor(this.selected);
    this.renderHead(columns);
    this.rows.clear();
    const rows = this.shown.map((run, index) => this.row(run, columns, index));
    if (!rows.length) {
      const empty = this.filtered()
        ? "No runs match these filters."
        : "No runs in this project yet. Log one with waddle.init(project=...) or run `waddle demo`.";
      rows.push(
        h("tr", {}, h("td", { colspan: String(columns.length + 1), class: "muted" }, empty)),
      );
    }
    this.body.replaceChildren(...rows);
    const first = this.shown.length ? this.offset + 1 : 0;
    setText(this.count, `${first}–${this.offset + this.shown.length} of ${this.total} runs`);
    this.previous.disabled = this.offset <= 0;
    this.next.disabled = this.offset + this.shown.length >= this.total;
    if (!this.reloadTimer) delete this.table.dataset.loading;
    this.renderSelection();
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
    const ids = [...this.selected];
    if (ids.length === 1) this.app.navigate({ run: ids[0], compare: [] });
    else if (ids.length > 1) this.app.navigate({ compare: ids, run: "" });
  }

  /**
   * Fold live events into the runs of the page (fold.js); returns the ids of runs whose
   * row changed. A run that starts or resumes elsewhere may belong on this page: reload.
   */
  apply(stream, runId, events) {
    if (this.runs.has(runId)) {
      this.fold.apply(stream, runId, events);
      return [runId];
    }
    if (events.some((event) => event.type === "run")) {
      this.reloadSoon();
      this.facetsSoon();
    }
    return [];
  }

  facetsSoon() {
    if (this.facetsTimer) return;
    this.facetsTimer = setTimeout(() => {
      this.facetsTimer = 0;
      this.loadFacets();
    }, FACETS_DELAY_MS);
  }

  refreshRows(ids) {
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
    clearTimeout(this.reloadTimer);
    clearTimeout(this.facetsTimer);
    this.request?.abort();
    this.socket.close();
    this.root.remove();
  }
}
