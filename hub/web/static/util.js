// Shared helpers of the dashboard's modules: plain DOM, no framework, no CDN. Every value from the server is put on
// the page with textContent (never as HTML), so message content cannot inject markup or script.

export const state = { me: null, features: new Set(), schemas: {} };

export function el(tag, attrs, ...children) {
  const svg = tag.startsWith("svg:");
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.setAttribute("class", v);
    else if (k === "text") node.textContent = String(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") {
    opts.headers["X-CSRF-Token"] = (state.me && state.me.csrf) || "";
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
  }
  const res = await fetch(path, opts);
  if (res.status === 401) {
    location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
    throw new Error("not logged in");
  }
  let data = null;
  const type = res.headers.get("content-type") || "";
  if (type.includes("json")) data = await res.json();
  if (!res.ok) {
    const d = data && data.detail;
    const err = new Error(typeof d === "string" ? d : d && d.message ? d.message : "HTTP " + res.status);
    err.status = res.status;
    throw err;
  }
  return data;
}

// The API's own description says which endpoints and options this hub has (the dashboard is served by hubs of
// several versions): the pages ask it instead of probing, so a missing endpoint is a note, not a failed request.
export async function loadFeatures() {
  try {
    const doc = await api("GET", "/api/openapi.json");
    state.doc = doc;
    for (const [path, ops] of Object.entries(doc.paths || {})) for (const m of Object.keys(ops)) state.features.add(m.toUpperCase() + " " + path);
  } catch (e) { /* an old hub: only what every version has */ }
}

export function has(method, path) { return state.features.has(method + " " + path); }

// Does the request body of an endpoint (as the API describes it) take this field? (e.g. replay's dry_run)
export function bodyTakes(method, path, field) {
  try {
    const op = state.doc.paths[path][method.toLowerCase()];
    let schema = op.requestBody.content["application/json"].schema;
    const deref = (s) => (s && s.$ref ? state.doc.components.schemas[s.$ref.split("/").pop()] : s);
    schema = deref(schema);
    if (schema && schema.anyOf) schema = schema.anyOf.map(deref).find((s) => s && s.properties);
    return !!(schema && schema.properties && field in schema.properties);
  } catch (e) { return false; }
}

export function can(perm) { return !!(state.me && state.me.permissions.includes(perm)); }

export function toast(text, bad) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.classList.toggle("bad", !!bad);
  t.hidden = false;
  clearTimeout(toast._timer);
  toast._timer = setTimeout(() => { t.hidden = true; }, 4000);
}

export function iso(ts) {
  if (ts === null || ts === undefined) return "–";
  return new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 120) return s + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}

export function badge(text) { return el("span", { class: "badge " + String(text || ""), text: text || "–" }); }
export function num(v, cls) { return el("td", { class: "num " + (cls || ""), text: v === undefined || v === null ? "–" : v }); }
export function main() { return document.getElementById("main"); }
export function setMain(...nodes) { main().replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false)); }
export function unavailable(what) { return el("p", { class: "muted unavailable", text: `${what}: not available on this hub yet.` }); }
export function go(url) { history.pushState(null, "", url); window.dispatchEvent(new Event("hub:route")); }
export function scroller(table) { return el("div", { class: "scroll" }, table); }

// A modal confirmation that says exactly what will happen. `body` is a node (a list of what will be queued...);
// resolves true when confirmed. `extra` is an optional node (e.g. a checkbox) whose change calls `refresh`.
export function confirmDialog({ title, body, ok = "Confirm", danger = false, extra = null }) {
  return new Promise((resolve) => {
    const content = el("div", { class: "dialog-body" }, body);
    const yes = el("button", { class: danger ? "danger" : "primary", id: "confirm-ok", type: "button", text: ok });
    const no = el("button", { type: "button", id: "confirm-cancel", text: "Cancel" });
    const dlg = el("dialog", { id: "confirm", class: "confirm" }, el("h2", { text: title }), content, extra,
      el("div", { class: "actions end" }, no, yes));
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    yes.addEventListener("click", () => done(true));
    no.addEventListener("click", () => done(false));
    dlg.addEventListener("cancel", (ev) => { ev.preventDefault(); done(false); });
    dlg.setBody = (node) => content.replaceChildren(node);
    dlg.setOk = (enabled, label) => { yes.disabled = !enabled; if (label) yes.textContent = label; };
    document.body.append(dlg);
    dlg.showModal();
    confirmDialog.current = dlg;
  });
}

// Detail of an audit entry or the like: key=value pairs, not a JSON dump ("–" when there is none).
export function details(obj) {
  const entries = Object.entries(obj || {}).filter(([, v]) => v !== null && v !== undefined && v !== "" && !(Array.isArray(v) && !v.length));
  if (!entries.length) return el("span", { class: "muted", text: "–" });
  return el("span", { class: "kv" }, entries.map(([k, v]) => el("span", { class: "kv-item" }, el("span", { class: "k", text: k + " " }),
    el("span", { class: "v", text: Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : String(v) }))));
}
