// DOM helpers. Data only ever becomes text nodes or attribute values set through the DOM
// API: nothing here parses HTML, so a run named "<img onerror=...>" stays a string.

const PROPS = new Set(["value", "checked", "disabled", "selected", "title", "type", "placeholder"]);

/**
 * Build an element: h("td", {class: "num", onclick: fn, dataset: {id: x}}, "text", child).
 * Strings and numbers among the children become text nodes; null/false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "style") Object.assign(node.style, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (PROPS.has(name)) node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replace every child of `node` with `children`. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** Set the text of `node` only when it changed (cheap for live updates). */
export function setText(node, value) {
  const text = value === null || value === undefined ? "" : String(value);
  if (node.textContent !== text) node.textContent = text;
}

/**
 * Call `fn` at most once per animation frame with everything queued meanwhile. A hidden
 * tab gets no frames, so a timer flushes the queue too: it never grows without bound.
 */
export function frameBatcher(fn, fallbackMs = 250) {
  let queue = [];
  let frame = 0;
  let timer = 0;
  const flush = () => {
    cancelAnimationFrame(frame);
    clearTimeout(timer);
    frame = timer = 0;
    const items = queue;
    queue = [];
    if (items.length) fn(items);
  };
  return (item) => {
    queue.push(item);
    if (frame || timer) return;
    frame = requestAnimationFrame(flush);
    timer = setTimeout(flush, fallbackMs);
  };
}

/**
 * The live wiring of a view: events that arrive while it loads are held; `start()` hands
 * them to `fn` at once, and from then on `push` batches them per frame (frameBatcher).
 */
export function liveQueue(fn) {
  let held = [];
  const batch = frameBatcher(fn);
  return {
    push(item) {
      if (held) held.push(item);
      else batch(item);
    },
    start() {
      const items = held || [];
      held = null;
      if (items.length) fn(items);
    },
  };
}
