// The chart toolbar shared by the run and compare views: x axis, log scale, smoothing,
// zoom reset, a key filter, and the live-connection indicator.

import { h, setText } from "./dom.js";

/**
 * handlers: onChange(patch) with x/log/smooth, onReset(), onFilter(text).
 * axis: {x: the x axis shown, choices: [[value, label], ...]} (axis.js).
 */
export function chartControls(state, handlers, axis) {
  const x = h(
    "select",
    { class: "x-mode", "aria-label": "x axis", onchange: () => handlers.onChange({ x: x.value }) },
    axis.choices.map(([value, label]) => h("option", { value, selected: value === axis.x }, label)),
  );
  const log = h("input", {
    type: "checkbox",
    class: "log-scale",
    checked: state.log,
    onchange: () => handlers.onChange({ log: log.checked }),
  });
  const smoothValue = h("output", { class: "smooth-value" }, state.smooth.toFixed(2));
  const smooth = h("input", {
    type: "range",
    class: "smoothing",
    min: "0",
    max: "0.99",
    step: "0.01",
    value: String(state.smooth),
    "aria-label": "smoothing",
    oninput: () => {
      setText(smoothValue, Number(smooth.value).toFixed(2));
      handlers.onChange({ smooth: Number(smooth.value) });
    },
  });
  const filter = h("input", {
    type: "search",
    class: "key-filter",
    placeholder: "Filter charts by key",
    oninput: () => handlers.onFilter(filter.value),
  });
  const live = h("span", { class: "live-status", title: "live updates" }, "connecting");
  const bar = h(
    "div",
    { class: "toolbar" },
    h("label", {}, "x axis ", x),
    h("label", {}, log, " log scale"),
    h("label", {}, "smoothing ", smooth, smoothValue),
    h("button", { type: "button", class: "reset-zoom", onclick: handlers.onReset }, "Reset zoom"),
    filter,
    live,
  );
  bar.setLive = (status) => {
    setText(live, status);
    live.dataset.status = status;
  };
  return bar;
}
