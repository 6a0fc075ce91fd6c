// A stable colour per run: the run id picks a slot in a palette, so a run keeps its colour
// across charts, views and reloads. Runs shown together that land on the same slot: the
// smallest id keeps it, the others move to the next free slot, so no two runs on one chart
// share a colour (while there are fewer runs than colours).

export const PALETTE = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
];

function slot(runId) {
  let hash = 2166136261;
  for (let i = 0; i < runId.length; i += 1) {
    hash ^= runId.charCodeAt(i);
    hash = Math.imul(hash, 16777619);
  }
  return (hash >>> 0) % PALETTE.length;
}

export function colorOf(runId) {
  return PALETTE[slot(runId)];
}

/**
 * Colours for runs shown together: Map run id -> colour, distinct while the palette lasts.
 * A run keeps its own colour unless a run with a smaller id has the same slot.
 */
export function colorsFor(runIds) {
  const ids = [...new Set(runIds)].sort();
  const taken = new Map();
  for (const runId of ids) {
    if (!taken.has(slot(runId))) taken.set(slot(runId), runId);
  }
  const out = new Map([...taken].map(([index, runId]) => [runId, PALETTE[index]]));
  for (const runId of ids) {
    if (out.has(runId)) continue;
    let index = slot(runId);
    for (let probe = 0; probe < PALETTE.length && taken.has(index); probe += 1) {
      index = (index + 1) % PALETTE.length;
    }
    taken.set(index, runId);
    out.set(runId, PALETTE[index]);
  }
  return out;
}

/** `color` with alpha, for the faint raw curve behind a smoothed one. */
export function faint(color, alpha = 0.25) {
  const n = parseInt(color.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}
