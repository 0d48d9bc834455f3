// Content views: HL7 v2 / X12 segments collapsed to one line each (a click expands one), FHIR JSON as a tree of
// collapsible nodes, a side-by-side diff of two messages, YAML with syntax highlighting, SVG charts.
import { el, iso } from "./util.js";

// ------------------------------------------------------------------------------------------- segments
function segmentLines(text) {
  if (text === null || text === undefined) return [];
  return text.split(/\r\n|\r|\n/).map((s) => s.trim()).filter(Boolean);
}

function fieldRows(seg) {
  const rows = [];
  for (const f of seg.fields) {
    rows.push(el("tr", { class: "field", "data-field": f.id },
      el("td", { class: "fid", text: f.id }),
      el("td", { class: "fname", text: f.name ? `${f.name}${f.type ? " (" + f.type + ")" : ""}` : "" }),
      el("td", { class: "fval", text: f.value })));
    if (f.repetitions) {
      f.repetitions.forEach((rep, ri) => {
        for (const c of rep) {
          const label = f.repetitions.length > 1 ? `${f.id}[${ri + 1}].${c.n}` : `${f.id}.${c.n}`;
          rows.push(el("tr", { class: "comp" }, el("td", { class: "fid", text: label }), el("td", { class: "fname", text: c.name }), el("td", { class: "fval", text: c.value })));
        }
      });
    }
  }
  return rows;
}

// One line per segment (its text, cut with an ellipsis); a click on it shows its fields with their names.
function segmentList(kind, segments, lines, rowsOf) {
  const list = el("div", { class: "segments " + kind });
  const toggleAll = el("button", { type: "button", class: "link small expand-all", text: "Expand all" });
  segments.forEach((seg, i) => {
    const name = seg.name && kind === "hl7" ? seg.name : seg.id;
    const line = lines[i] !== undefined ? lines[i] : name;
    const head = el("button", { type: "button", class: "seg-line", "data-segment": name, "aria-expanded": "false" },
      el("span", { class: "seg-caret", text: "▸" }), el("span", { class: "seg-text", text: line }),
      kind === "x12" && seg.name ? el("span", { class: "seg-name", text: seg.name }) : null);
    const body = el("table", { class: "seg-fields", hidden: true }, el("tbody", {}, rowsOf(seg)));
    head.addEventListener("click", () => {
      const open = body.hidden;
      body.hidden = !open;
      head.setAttribute("aria-expanded", String(open));
      head.classList.toggle("open", open);
    });
    list.append(el("div", { class: "seg", "data-segment": name }, head, body));
  });
  toggleAll.addEventListener("click", () => {
    const open = toggleAll.textContent === "Expand all";
    for (const s of list.querySelectorAll(".seg")) {
      s.querySelector("table").hidden = !open;
      s.querySelector(".seg-line").classList.toggle("open", open);
      s.querySelector(".seg-line").setAttribute("aria-expanded", String(open));
    }
    toggleAll.textContent = open ? "Collapse all" : "Expand all";
  });
  return el("div", {}, el("div", { class: "seg-tools" }, toggleAll), list);
}

export function hl7View(structure, raw) {
  return segmentList("hl7", structure.segments, segmentLines(raw), fieldRows);
}

// Element names come from the server: the implementation guide's, read from pyx12's maps (hub/web/render.py).
function x12Rows(seg) {
  const names = seg.element_names || {};
  return seg.elements.map((e) => {
    const name = names[e.id] || "";
    return el("tr", { class: "field", "data-field": e.id }, el("td", { class: "fid", text: e.id }),
      el("td", { class: "fname", text: name + (e.components ? (name ? " — " : "") + e.components.join(" : ") : "") }),
      el("td", { class: "fval", text: e.value }));
  });
}

export function x12View(structure, raw) {
  const seps = structure.separators || {};
  let lines = [];
  if (raw && seps.segment) lines = raw.split(seps.segment).map((s) => s.trim()).filter(Boolean);
  const view = segmentList("x12", structure.segments, lines, x12Rows);
  return view;
}

// ------------------------------------------------------------------------------------------- FHIR / JSON tree
export function jsonTree(value, depth = 0, key = null) {
  const label = key === null ? null : el("span", { class: "j-key", text: JSON.stringify(key) + ": " });
  if (value === null || typeof value !== "object") {
    const cls = value === null ? "j-null" : typeof value === "string" ? "j-str" : typeof value === "number" ? "j-num" : "j-bool";
    return el("div", { class: "j-leaf" }, label, el("span", { class: cls, text: JSON.stringify(value) }));
  }
  const arr = Array.isArray(value);
  const entries = arr ? value.map((v, i) => [i, v]) : Object.entries(value);
  const summary = el("summary", {}, label, el("span", { class: "j-brace", text: arr ? `[ ${entries.length} ]` : `{ ${entries.length} }` }),
    !arr && value.resourceType ? el("span", { class: "j-note", text: " " + value.resourceType + (value.id ? "/" + value.id : "") }) : null);
  const node = el("details", { class: "j-node" }, summary, entries.map(([k, v]) => jsonTree(v, depth + 1, arr ? null : k)));
  if (depth < 2) node.open = true;
  return node;
}

export function fhirView(structure, raw) {
  let doc;
  try { doc = JSON.parse(structure.pretty || raw); } catch (e) { return el("pre", { class: "fhir", text: structure.pretty || raw }); }
  return el("div", { class: "json-tree fhir" }, jsonTree(doc));
}

// The view of one content: the structure's own view, the raw text on a second tab.
export function contentView(structure, rawText) {
  const views = [];
  if (structure && structure.kind === "hl7v2") views.push(["Segments", () => hl7View(structure, rawText)]);
  if (structure && structure.kind === "x12") views.push(["Segments", () => x12View(structure, rawText)]);
  if (structure && structure.kind === "fhir") views.push(["Tree", () => fhirView(structure, rawText)]);
  if (rawText !== null && rawText !== undefined) views.push(["Raw", () => el("pre", { class: "raw", text: rawText.replace(/\r\n?/g, "\n") })]);
  if (!views.length) return el("p", { class: "muted", text: "(no content)" });
  return tabs(views, "sub");
}

export function tabs(views, cls, onchange) {
  const bar = el("div", { class: "tabs " + (cls || ""), role: "tablist" });
  const pane = el("div", { class: "pane" });
  const show = (b, make, key) => {
    for (const x of bar.children) x.classList.remove("active");
    b.classList.add("active");
    pane.replaceChildren(make());
    if (onchange) onchange(key);
  };
  let first = null;
  views.forEach(([label, make, key, active]) => {
    const b = el("button", { type: "button", role: "tab", "data-tab": key || label, text: label });
    b.addEventListener("click", () => show(b, make, key || label));
    bar.append(b);
    if (first === null || active) first = [b, make, key || label];
  });
  if (first) show(...first);
  return el("div", { class: "content-view" }, bar, pane);
}

// ------------------------------------------------------------------------------------------- diff
function lcs(a, b) {
  const n = a.length, m = b.length;
  const t = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) t[i][j] = a[i] === b[j] ? t[i + 1][j + 1] + 1 : Math.max(t[i + 1][j], t[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { out.push([a[i], b[j]]); i++; j++; }
    else if (j < m && (i >= n || t[i][j + 1] >= t[i + 1][j])) { out.push([null, b[j]]); j++; }
    else { out.push([a[i], null]); i++; }
  }
  // pair a removed line with the added line next to it of the same segment: one changed line, fields marked
  const merged = [];
  for (let k = 0; k < out.length; k++) {
    const [x, y] = out[k];
    const nx = out[k + 1];
    if (x !== null && y === null && nx && nx[0] === null && nx[1] !== null && segName(x) === segName(nx[1])) { merged.push([x, nx[1]]); k++; }
    else if (x === null && y !== null && nx && nx[0] !== null && nx[1] === null && segName(y) === segName(nx[0])) { merged.push([nx[0], y]); k++; }
    else merged.push([x, y]);
  }
  return merged;
}

function segName(line) { return line.split(/[|*~]/)[0]; }

function fieldSpans(line, other, sep) {
  const parts = line.split(sep);
  const theirs = other === null ? null : other.split(sep);
  const name = parts[0];
  return parts.flatMap((p, i) => {
    const changed = theirs !== null && theirs[i] !== p;
    const id = name === "MSH" && sep === "|" ? `MSH-${i + 1}` : sep === "|" ? `${name}-${i}` : `${name}${String(i).padStart(2, "0")}`;
    const span = el(changed ? "mark" : "span", changed && i > 0 ? { "data-field": id, title: id } : {}, p);
    return i ? [sep, span] : [span];
  });
}

// Received vs sent, side by side, one segment a line: lines only on one side and the fields that differ marked.
export function diffView(leftText, rightText, leftLabel, rightLabel) {
  const a = segmentLines(leftText), b = segmentLines(rightText);
  const sep = a.length && a[0].startsWith("ISA") ? a[0][3] : "|";
  const rows = lcs(a, b).map(([x, y]) => {
    const kind = x === y ? "same" : x === null ? "added" : y === null ? "removed" : "changed";
    return el("tr", { class: "d-" + kind, "data-segment": segName(x || y) },
      el("td", { class: "d-left mono" }, x === null ? "" : kind === "changed" ? fieldSpans(x, y, sep) : x),
      el("td", { class: "d-right mono" }, y === null ? "" : kind === "changed" ? fieldSpans(y, x, sep) : y));
  });
  const changed = rows.filter((r) => !r.classList.contains("d-same")).length;
  return el("div", { class: "diff" }, el("p", { class: "muted", text: changed ? `${changed} segment(s) differ.` : "No difference: the destination was sent the received content." }),
    el("div", { class: "scroll" }, el("table", { class: "diff-table" }, el("thead", {}, el("tr", {}, el("th", { text: leftLabel }), el("th", { text: rightLabel }))), el("tbody", {}, rows))));
}

// ------------------------------------------------------------------------------------------- YAML
// A small tokenizer: comments, keys, quoted strings, ${VARIABLES}, numbers/booleans, list dashes.
export function yamlView(text) {
  const pre = el("pre", { class: "yaml" });
  const lines = (text || "").split("\n");
  lines.forEach((line, i) => {
    const row = el("span", { class: "y-line", "data-line": i + 1 });
    row.append(el("span", { class: "y-ln", text: String(i + 1).padStart(3, " ") + "  " }));
    tokenizeYamlLine(line, row);
    pre.append(row, "\n");
  });
  return pre;
}

function tokenizeYamlLine(line, out) {
  const re = /(#.*$)|("(?:[^"\\]|\\.)*"|'(?:[^']|'')*')|(\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})|(^\s*-\s)|((?:^|(?<=[{,\s-]))[A-Za-z_][\w.\-/]*(?=:(\s|$)))|((?<=[\s:\[{,]|^)(?:true|false|null|yes|no|~|\d+(?:\.\d+)?[smhd]?)(?=[\s,\]}]|$))/g;
  let last = 0, m;
  while ((m = re.exec(line)) !== null) {
    if (m[0] === "") { re.lastIndex++; continue; }
    if (m.index > last) out.append(line.slice(last, m.index));
    const cls = m[1] ? "y-comment" : m[2] ? "y-str" : m[3] ? "y-var" : m[4] ? "y-dash" : m[5] ? "y-key" : "y-lit";
    if (m[2]) {  // variables inside strings are still marked
      const s = el("span", { class: cls });
      m[2].split(/(\$\{[^}]*\})/).forEach((part) => s.append(part.startsWith("${") ? el("span", { class: "y-var", text: part }) : part));
      out.append(s);
    } else out.append(el("span", { class: cls, text: m[0] }));
    last = m.index + m[0].length;
  }
  if (last < line.length) out.append(line.slice(last));
}

// ------------------------------------------------------------------------------------------- charts
export function sparkline(ins, outs, w = 120, h = 22) {
  const max = Math.max(1, ...ins, ...outs);
  const path = (vals) => vals.map((v, i) => `${i ? "L" : "M"}${(i * w / Math.max(1, vals.length - 1)).toFixed(1)},${(h - 1 - (v / max) * (h - 2)).toFixed(1)}`).join("");
  return el("svg:svg", { class: "spark", viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img", "aria-label": `in ${ins.reduce((a, b) => a + b, 0)}, out ${outs.reduce((a, b) => a + b, 0)} in the last hour` },
    el("svg:path", { class: "spark-in", d: path(ins) }), el("svg:path", { class: "spark-out", d: path(outs) }));
}

// A line chart of [[t, n], ...] series sharing one time axis.
export function lineChart(series, { from, to, title, w = 640, h = 170 } = {}) {
  const names = Object.keys(series);
  const pts = names.flatMap((k) => series[k] || []);
  const t0 = from !== undefined ? from : Math.min(...pts.map((p) => p[0]));
  const t1 = to !== undefined ? to : Math.max(...pts.map((p) => p[0]));
  const max = Math.max(1, ...pts.map((p) => p[1]));
  const L = 38, R = 8, T = 8, B = 22;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (w - L - R);
  const y = (v) => T + (h - T - B) * (1 - v / max);
  const svg = el("svg:svg", { class: "chart", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", role: "img", "aria-label": title || "chart" });
  for (const f of [0, 0.5, 1]) {
    const v = Math.round(max * f);
    svg.append(el("svg:line", { class: "grid", x1: L, x2: w - R, y1: y(v), y2: y(v) }), el("svg:text", { class: "axis", x: L - 4, y: y(v) + 4, "text-anchor": "end", text: v }));
  }
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) svg.append(el("svg:text", { class: "axis", x: x(t), y: h - 6, "text-anchor": anchor, text: iso(t).slice(5, 16) }));
  names.forEach((k) => {
    const s = series[k] || [];
    if (!s.length) return;
    svg.append(el("svg:path", { class: "line s-" + k, d: s.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("") }));
  });
  const legend = el("div", { class: "legend" }, names.map((k) => el("span", { class: "key s-" + k }, el("i"), k + " " + (series[k] || []).reduce((a, p) => a + p[1], 0))));
  return el("figure", { class: "chart-box", "data-chart": title || "" }, title ? el("figcaption", { text: title }) : null, svg, legend);
}
