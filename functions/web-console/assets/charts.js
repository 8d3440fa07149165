// Charts as plain SVG: bars with labelled axes. Each is a <figure> whose <figcaption> names it
// and whose SVG carries an aria-label summarising the figures, so a screen reader gets them too.

import { h, svg } from "./ui.js";

const WIDTH = 640;
const PLOT_HEIGHT = 190;
const MARGIN = { top: 16, right: 16, left: 72 };
const LONGEST_LABEL = 22;

function niceMax(value) {
  if (value <= 0) return 0;
  const power = 10 ** Math.floor(Math.log10(value));
  const steps = [1, 2, 2.5, 5, 10];
  return steps.map((s) => s * power).find((s) => s >= value) ?? 10 * power;
}

// Axis text: short (12k, 1.5M; whole numbers from 100 on).
function compact(value) {
  return along(Math.abs(value))(value);
}

// One style for every text of an axis, chosen by its largest magnitude, so that 1,018 and
// 11,000 on one axis read 1.0k and 11k.
function along(largest) {
  const [divisor, suffix] = largest >= 1e9 ? [1e9, "B"] : largest >= 1e6 ? [1e6, "M"] : largest >= 1e4 ? [1e3, "k"] : [1, ""];
  return (value) => {
    const scaled = value / divisor;
    if (suffix) return `${Math.abs(scaled) >= 10 ? scaled.toFixed(0) : scaled.toFixed(1)}${suffix}`;
    if (Math.abs(value) >= 100 || Number.isInteger(value)) return String(Math.round(value));
    return String(Number(value.toFixed(2)));
  };
}

// Approximate width of an axis text at the tick font (11 px): enough to decide on rotating.
const CHARACTER_WIDTH = 6.6;

// Vertical bars for `items` [{label, value}], values ≥ or ≤ 0 around a zero line.
export function barChart(caption, items, { unit = "", description } = {}) {
  const innerWidth = WIDTH - MARGIN.left - MARGIN.right;
  const band = innerWidth / Math.max(1, items.length);
  const short = (label) => (label.length > LONGEST_LABEL ? `${label.slice(0, LONGEST_LABEL - 1)}…` : label);
  const labels = items.map((i) => short(String(i.label)));
  // Labels turn when the longest would run into its neighbour; the chart grows to hold them.
  const longest = Math.max(0, ...labels.map((l) => l.length)) * CHARACTER_WIDTH;
  const rotate = longest > band * 0.95;
  const bottom = rotate ? Math.ceil(longest * Math.sin((40 * Math.PI) / 180)) + 24 : 30;
  const height = MARGIN.top + PLOT_HEIGHT + bottom;
  const baseline = MARGIN.top + PLOT_HEIGHT + 14;
  // Counts get whole-number ticks: a maximum of 2 jobs is drawn as 0 1 2 3 4, not 0 0.5 1 ….
  const counts = items.every((i) => Number.isInteger(i.value));
  const ceiling = (v) => (counts ? Math.max(4, Math.ceil(v / 4) * 4) : niceMax(v));
  const max = ceiling(Math.max(0, ...items.map((i) => i.value)));
  const min = items.some((i) => i.value < 0) ? -ceiling(Math.max(0, ...items.map((i) => -i.value))) : 0;
  const range = max - min || 1;
  const y = (v) => MARGIN.top + ((max - v) / range) * PLOT_HEIGHT;
  const marks = [];
  const tick = along(Math.max(max, -min));
  for (let t = 0; t <= 4; t += 1) {
    const value = min + (range * t) / 4;
    marks.push(
      svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value), class: "grid" }),
      svg("text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end", class: "tick" }, tick(value)),
    );
  }
  items.forEach((item, index) => {
    const x = MARGIN.left + index * band;
    const top = y(Math.max(0, item.value));
    const length = Math.max(item.value === 0 ? 0 : 1, Math.abs(y(item.value) - y(0)));
    marks.push(
      svg(
        "rect",
        { x: x + band * 0.15, y: top, width: band * 0.7, height: length, class: item.value < 0 ? "bar negative" : "bar" },
        svg("title", {}, `${item.label}: ${item.display ?? compact(item.value)}${unit}`),
      ),
      svg(
        "text",
        {
          x: x + band / 2,
          y: baseline,
          "text-anchor": rotate ? "end" : "middle",
          transform: rotate ? `rotate(-40 ${x + band / 2} ${baseline})` : null,
          class: "tick",
        },
        labels[index],
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
      { viewBox: `0 0 ${WIDTH} ${height}`, role: "img", "aria-label": summary, preserveAspectRatio: "xMidYMid meet" },
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
  const label = along(Math.max(Math.abs(lo), Math.abs(hi)));
  const items = counts.map((count, i) => ({ label: `${label(lo + i * width)}${unit}`, value: count }));
  return barChart(caption, items, {
    description: `${caption}: ${values.length} values from ${compact(lo)}${unit} to ${compact(hi)}${unit} in ${counts.length} ranges; ` +
      items.map((i) => `from ${i.label}: ${i.value}`).join(", "),
  });
}
