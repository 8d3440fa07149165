// Charts as plain SVG: bars with labelled axes. Each is a <figure> whose <figcaption> names it
// and whose SVG carries an aria-label summarising the figures, so a screen reader gets them too.

import { h, svg } from "./ui.js";

const WIDTH = 640;
const HEIGHT = 260;
const MARGIN = { top: 16, right: 16, bottom: 56, left: 72 };

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const steps = [1, 2, 2.5, 5, 10];
  return steps.map((s) => s * power).find((s) => s >= value) ?? 10 * power;
}

function compact(value) {
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${(value / 1e9).toFixed(1)}B`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (abs >= 1e4) return `${(value / 1e3).toFixed(0)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

// Vertical bars for `items` [{label, value}], values ≥ or ≤ 0 around a zero line.
export function barChart(caption, items, { unit = "", description } = {}) {
  const innerWidth = WIDTH - MARGIN.left - MARGIN.right;
  const innerHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const max = niceMax(Math.max(0, ...items.map((i) => i.value)));
  const min = -niceMax(Math.max(0, ...items.map((i) => -i.value))) * (items.some((i) => i.value < 0) ? 1 : 0);
  const range = max - min || 1;
  const y = (v) => MARGIN.top + ((max - v) / range) * innerHeight;
  const band = innerWidth / Math.max(1, items.length);
  const marks = [];
  for (let t = 0; t <= 4; t += 1) {
    const value = min + (range * t) / 4;
    marks.push(
      svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end", class: "tick" }, compact(value)),
    );
  }
  const rotate = items.length > 8;
  items.forEach((item, index) => {
    const x = MARGIN.left + index * band;
    const top = y(Math.max(0, item.value));
    const height = Math.max(item.value === 0 ? 0 : 1, Math.abs(y(item.value) - y(0)));
    marks.push(
      svg(
        "rect",
        { x: x + band * 0.15, y: top, width: band * 0.7, height, class: item.value < 0 ? "bar negative" : "bar" },
        svg("title", {}, `${item.label}: ${item.display ?? compact(item.value)}${unit}`),
      ),
      svg(
        "text",
        {
          x: x + band / 2,
          y: HEIGHT - MARGIN.bottom + 14,
          "text-anchor": rotate ? "end" : "middle",
          transform: rotate ? `rotate(-40 ${x + band / 2} ${HEIGHT - MARGIN.bottom + 14})` : null,
          class: "tick",
        },
        item.label,
      ),
    );
  });
  const summary =
    description ?? `${caption}: ` + items.map((i) => `${i.label} ${i.display ?? compact(i.value)}${unit}`).join(", ");
  return h(
    "figure",
    { class: "chart" },
    h("figcaption", {}, caption),
    svg(
      "svg",
      { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": summary, preserveAspectRatio: "xMidYMid meet" },
      svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(0), y2: y(0), class: "axis" }),
      marks,
    ),
  );
}

// Counts of `values` in `bins` equal ranges between their minimum and maximum.
export function histogram(caption, values, { bins = 12, unit = "" } = {}) {
  if (values.length === 0) return barChart(caption, [], { description: `${caption}: no values` });
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const width = (hi - lo) / bins || 1;
  const counts = new Array(hi === lo ? 1 : bins).fill(0);
  for (const v of values) counts[Math.min(counts.length - 1, Math.floor((v - lo) / width))] += 1;
  const items = counts.map((count, i) => ({ label: `${compact(lo + i * width)}${unit}`, value: count }));
  return barChart(caption, items, {
    description: `${caption}: ${values.length} values from ${compact(lo)}${unit} to ${compact(hi)}${unit} in ${counts.length} ranges; ` +
      items.map((i) => `from ${i.label}: ${i.value}`).join(", "),
  });
}
