// Histograms over steps as a heat-map on a canvas: a column per logged step (oldest on the
// left), values upwards, each bin's cell shaded by its share of the step's largest count.
// Steps may have different bin edges: every step is drawn on one shared value axis.

const PAD = { left: 52, right: 8, top: 8, bottom: 22 };
const AXIS = "#6b7280";
// Light to dark: an empty bin is the background, a full one the darkest blue.
const LOW = [230, 238, 250];
const HIGH = [24, 64, 160];

/** The colour of a bin at `share` (0..1) of its step's largest count. */
export function shade(share) {
  const t = Math.min(Math.max(share, 0), 1);
  const [r, g, b] = LOW.map((low, i) => Math.round(low + (HIGH[i] - low) * t));
  return `rgb(${r}, ${g}, ${b})`;
}

/** The value range every step's edges fall in: [min, max], or null when there is none. */
export function valueRange(rows) {
  let min = Infinity;
  let max = -Infinity;
  for (const row of rows) {
    for (const edge of row.bins || []) {
      if (!Number.isFinite(edge)) continue;
      min = Math.min(min, edge);
      max = Math.max(max, edge);
    }
  }
  if (min > max) return null;
  return min === max ? [min - 0.5, max + 0.5] : [min, max];
}

function label(value) {
  const abs = Math.abs(value);
  return abs !== 0 && (abs < 1e-3 || abs >= 1e4)
    ? value.toExponential(1)
    : String(+value.toFixed(3));
}

/**
 * The bin under a point of the canvas (CSS pixels from its top left), as drawHeatmap laid
 * it out: {step, low, high, count}, or null outside every bin.
 */
export function binAt(canvas, rows, x, y) {
  const range = valueRange(rows);
  if (!rows.length || !range) return null;
  const plotW = (canvas.clientWidth || 400) - PAD.left - PAD.right;
  const plotH = (canvas.clientHeight || 200) - PAD.top - PAD.bottom;
  const row = rows[Math.floor(((x - PAD.left) / plotW) * rows.length)];
  if (!row || y < PAD.top || y > PAD.top + plotH) return null;
  const value = range[0] + ((PAD.top + plotH - y) / plotH) * (range[1] - range[0]);
  const i = row.bins.findIndex((edge, j) => j + 1 < row.bins.length && value < row.bins[j + 1]);
  if (i < 0 || value < row.bins[0]) return null;
  return { step: row.step, low: row.bins[i], high: row.bins[i + 1], count: row.counts[i] };
}

/**
 * Draw `rows` ([{step, bins: n+1 edges, counts: n}], ordered by step) on `canvas`, sized to
 * its CSS box at the device's pixel ratio.
 */
export function drawHeatmap(canvas, rows) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 400;
  const height = canvas.clientHeight || 200;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const range = valueRange(rows);
  if (!rows.length || !range) return;
  const [lo, hi] = range;
  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const columnW = plotW / rows.length;
  const y = (value) => PAD.top + plotH - ((value - lo) / (hi - lo)) * plotH;
  rows.forEach((row, column) => {
    const counts = row.counts || [];
    const most = Math.max(0, ...counts.filter(Number.isFinite));
    if (!most) return;
    const x0 = PAD.left + column * columnW;
    counts.forEach((count, i) => {
      const [a, b] = [row.bins[i], row.bins[i + 1]];
      if (!count || !Number.isFinite(a) || !Number.isFinite(b)) return;
      const top = y(Math.max(a, b));
      ctx.fillStyle = shade(count / most);
      // At least a pixel each way, so a narrow bin or a long run of steps still shows.
      ctx.fillRect(x0, top, Math.max(columnW, 1), Math.max(y(Math.min(a, b)) - top, 1));
    });
  });
  ctx.fillStyle = AXIS;
  ctx.strokeStyle = AXIS;
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeRect(PAD.left - 0.5, PAD.top - 0.5, plotW + 1, plotH + 1);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const value of [lo, (lo + hi) / 2, hi]) ctx.fillText(label(value), PAD.left - 4, y(value));
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const first = rows[0].step;
  const last = rows[rows.length - 1].step;
  ctx.fillText(`step ${first}`, PAD.left + columnW / 2, PAD.top + plotH + 4);
  if (rows.length > 1) ctx.fillText(`${last}`, PAD.left + plotW - columnW / 2, PAD.top + plotH + 4);
}
