// A small hand-written SVG chart: completed and failed per minute (stacked bars) and the
// failure rate (a line on its own 0-100 % scale). Colours come from style.css.
const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// Drawn at the box's own width (no stretching: text keeps its shape on a narrow screen).
export function chart(completed, failed, startMs, minuteMs, width) {
  const W = Math.max(300, Math.round(width || 1000)), H = 220, L = 44, R = 40, T = 10, B = 24;
  const n = completed.length;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "jobs per minute over the last hour" });
  const totals = completed.map((c, i) => c + (failed[i] || 0));
  const max = niceMax(Math.max(0, ...totals));
  const pw = W - L - R, ph = H - T - B;
  const bw = pw / Math.max(n, 1);
  const y = (v) => T + ph - (v / max) * ph;
  for (const f of [0, 0.5, 1]) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), stroke: "#e5e7eb" }));
    svg.append(s("text", { x: L - 6, y: y(max * f) + 4, "text-anchor": "end" }, Math.round(max * f).toLocaleString()));
  }
  svg.append(s("text", { x: W - R + 6, y: T + 8 }, "100 %"));
  svg.append(s("text", { x: W - R + 6, y: T + ph }, "0 %"));
  const ok = css("--completed"), bad = css("--dead"), rate = css("--delayed");
  const points = [];
  completed.forEach((c, i) => {
    const f = failed[i] || 0;
    const x = L + i * bw + 1;
    if (c > 0) svg.append(s("rect", { x, y: y(c), width: Math.max(bw - 2, 1), height: T + ph - y(c), fill: ok }));
    if (f > 0) svg.append(s("rect", { x, y: y(c + f), width: Math.max(bw - 2, 1), height: y(c) - y(c + f), fill: bad }));
    if (c + f > 0) points.push(`${L + (i + 0.5) * bw},${T + ph - (f / (c + f)) * ph}`);
  });
  if (points.length > 1) svg.append(s("polyline", { points: points.join(" "), fill: "none", stroke: rate, "stroke-width": 2 }));
  const step = W < 600 ? 30 : 15;
  for (let i = 0; i < n; i += step) {
    const t = new Date(startMs + i * minuteMs);
    svg.append(s("text", { x: L + i * bw, y: H - 6 }, t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
  }
  svg.append(s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, "now"));
  if (!totals.some((v) => v > 0)) {
    svg.append(s("text", { x: L + pw / 2, y: T + ph / 2, "text-anchor": "middle" }, "no jobs finished in the last hour"));
  }
  return svg;
}

export function spark(completed, failed) {
  const W = 120, H = 24;
  const svg = s("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "aria-hidden": "true" });
  const totals = completed.map((c, i) => c + (failed[i] || 0));
  const max = Math.max(1, ...totals);
  const bw = W / Math.max(completed.length, 1);
  totals.forEach((v, i) => {
    if (v <= 0) return;
    const hgt = Math.max(1, (v / max) * H);
    svg.append(s("rect", { x: i * bw, y: H - hgt, width: Math.max(bw - 0.5, 0.5), height: hgt,
      fill: failed[i] > 0 ? css("--dead") : css("--completed") }));
  });
  return svg;
}
