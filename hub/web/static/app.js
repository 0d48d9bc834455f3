"use strict";
// The hub dashboard: plain DOM, no framework, no CDN. Every value from the server is put on the page with
// textContent (never as HTML), so message content cannot inject markup or script.

let ME = null;

// ------------------------------------------------------------------------------------------- helpers
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
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

async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") {
    opts.headers["X-CSRF-Token"] = (ME && ME.csrf) || "";
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
    throw new Error(typeof d === "string" ? d : d && d.message ? d.message : "HTTP " + res.status);
  }
  return data;
}

function can(perm) { return ME && ME.permissions.includes(perm); }

function toast(text, bad) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.style.background = bad ? "#8a1f1f" : "#1b2438";
  t.hidden = false;
  clearTimeout(toast._timer);
  toast._timer = setTimeout(() => { t.hidden = true; }, 4000);
}

function iso(ts) {
  if (ts === null || ts === undefined) return "–";
  return new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 120) return s + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}

function badge(text) { return el("span", { class: "badge " + String(text || ""), text: text || "–" }); }
function num(v, cls) { return el("td", { class: "num " + (cls || ""), text: v === undefined || v === null ? "–" : v }); }
function main() { return document.getElementById("main"); }
function setMain(...nodes) { const m = main(); m.replaceChildren(...nodes); }

// ------------------------------------------------------------------------------------------- overview
async function pageOverview() {
  const channels = await api("GET", "/api/channels");
  let received = 0, queued = 0, dead = 0, oldest = null, rejected = 0;
  for (const c of channels) {
    received += c.last_hour.received;
    rejected += c.last_hour.rejected + c.last_hour.error;
    for (const d of c.destinations) {
      queued += d.queued + d.retry + d.sending;
      dead += d.dead;
      if (d.oldest_queued_age !== null && (oldest === null || d.oldest_queued_age > oldest)) oldest = d.oldest_queued_age;
    }
  }
  const card = (label, value, cls) => el("div", { class: "card" }, el("div", { class: "label", text: label }), el("div", { class: "value " + (cls || ""), text: value }));
  const cards = el("div", { class: "cards", id: "summary" },
    card("Channels", channels.length),
    card("Received, last hour", received),
    card("Rejected, last hour", rejected, rejected ? "warn-text" : ""),
    card("Waiting to send", queued, queued ? "warn-text" : ""),
    card("Dead letters", dead, dead ? "bad-text" : ""),
    card("Oldest waiting", age(oldest), oldest !== null && oldest > 600 ? "bad-text" : ""));

  const head = el("tr", {}, ["Channel / destination", "State", "Received", "Last hour", "/min", "Filtered", "Rejected",
    "Queued", "Retry", "Sent", "Dead", "Oldest", "Peers", ""].map((h, i) => el("th", { class: i >= 2 && i <= 11 ? "num" : "", text: h })));
  const body = el("tbody");
  for (const c of channels) {
    const peers = [];
    if (c.peers.mllp) for (const [ep, n] of Object.entries(c.peers.mllp)) peers.push(`MLLP ${ep}: ${n} open`);
    if (c.peers.sftp_last_poll_age !== undefined) peers.push(c.peers.sftp_last_poll_age === null ? "SFTP: no poll has reached the server yet" : `SFTP polled ${age(c.peers.sftp_last_poll_age)} ago`);
    if (c.peers.sftp_error) peers.push(`SFTP poll failing: ${c.peers.sftp_error}`);
    const controls = el("td");
    if (can("channels") && (c.state === "running" || c.state === "paused")) {
      const paused = c.state === "paused";
      controls.append(el("button", {
        class: paused ? "primary" : "", text: paused ? "Resume" : "Pause", "data-channel": c.name,
        onclick: async (ev) => {
          ev.target.disabled = true;
          try {
            await api("POST", `/api/channels/${encodeURIComponent(c.name)}/${paused ? "resume" : "pause"}`);
            toast(`${c.name} ${paused ? "resumed" : "paused"}`);
          } catch (e) { toast(e.message, true); }
          route();
        },
      }));
    }
    if (can("channels") && c.state !== "not configured") {  // disable/enable: source and workers, on every node
      const disabled = c.state === "disabled";
      controls.append(el("button", {
        class: disabled ? "primary" : "", text: disabled ? "Enable" : "Disable", "data-channel": c.name,
        onclick: async (ev) => {
          if (!disabled && !confirm(`Disable ${c.name} on every node? Its source and delivery workers stop until enabled.`)) return;
          ev.target.disabled = true;
          try {
            await api("POST", `/api/channels/${encodeURIComponent(c.name)}/${disabled ? "enable" : "disable"}`);
            toast(`${c.name} ${disabled ? "enabled" : "disabled"}`);
          } catch (e) { toast(e.message, true); }
          route();
        },
      }));
    }
    body.append(el("tr", { class: "channel", "data-channel": c.name },
      el("td", {}, el("a", { href: "/messages?channel=" + encodeURIComponent(c.name), text: c.name }),
        c.description ? el("div", { class: "muted", text: c.description }) : null),
      el("td", {}, badge(c.state), el("div", { class: "muted", text: c.source || "" }),
        c.error ? el("div", { class: "bad-text", text: c.error }) : null),
      num(c.received), num(c.last_hour.received), num(c.last_hour.per_minute), num(c.filtered),
      num(c.rejected + c.error, c.rejected + c.error ? "warn-text" : ""),
      el("td"), el("td"), el("td"), el("td"), el("td"),
      el("td", { class: "muted", text: peers.join("; ") }), controls));
    for (const d of c.destinations) {
      body.append(el("tr", { class: "dest", "data-destination": c.name + "/" + d.name },
        el("td", {}, "→ ", el("a", { href: `/messages?channel=${encodeURIComponent(c.name)}&destination=${encodeURIComponent(d.name)}`, text: d.name }),
          d.type ? el("span", { class: "muted", text: " (" + d.type + ")" }) : null),
        el("td", {}, d.last_error ? el("span", { class: "warn-text", title: d.last_error, text: "failing" }) : ""),
        el("td"), num(d.last_hour.sent + d.last_hour.dead + d.last_hour.queued + d.last_hour.retry + d.last_hour.sending), el("td"), el("td"), el("td"),
        num(d.queued + d.sending, d.queued + d.sending ? "warn-text" : ""), num(d.retry, d.retry ? "warn-text" : ""), num(d.sent),
        num(d.dead, d.dead ? "bad-text" : ""), num(age(d.oldest_queued_age), d.oldest_queued_age > 600 ? "bad-text" : ""),
        el("td", { class: "muted", text: d.last_error || "" }), el("td")));
    }
  }
  setMain(el("h1", { text: "Overview" }), cards,
    el("div", { class: "panel" }, el("table", { id: "channels" }, el("thead", {}, head), body)),
    el("p", { class: "muted", text: "Refreshes every 5 seconds. Counts are from the store; rates cover the last hour." }));
  clearTimeout(pageOverview._timer);
  pageOverview._timer = setTimeout(() => { if (location.pathname === "/") pageOverview().catch(() => {}); }, 5000);
}

// ------------------------------------------------------------------------------------------- messages
const SEARCH_FIELDS = [
  ["channel", "Channel"], ["status", "Status"], ["destination", "Destination"], ["since", "Since (1h, ISO)"],
  ["until", "Until"], ["control_id", "Control ID"], ["patient_id", "Patient ID"], ["message_type", "Type (ADT, ADT^A04)"], ["text", "Text"],
];
const STATUSES = ["", "accepted", "filtered", "rejected", "error", "queued", "retry", "sending", "sent", "dead"];

async function pageMessages() {
  const params = new URLSearchParams(location.search);
  const form = el("form", { class: "search", id: "search-form" });
  for (const [name, label] of SEARCH_FIELDS) {
    if ((name === "patient_id" || name === "text") && !can("content")) continue;
    let input;
    if (name === "status") {
      input = el("select", { name, id: "f-" + name }, STATUSES.map((s) => el("option", { value: s, text: s || "any" })));
      input.value = params.get(name) || "";
    } else {
      input = el("input", { name, id: "f-" + name, value: params.get(name) || "" });
    }
    form.append(el("label", {}, label, input));
  }
  form.append(el("div", {}, el("button", { type: "submit", class: "primary", id: "search-button", text: "Search" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [name] of SEARCH_FIELDS) {
      const f = form.elements.namedItem(name);
      if (f && f.value.trim()) q.set(name, f.value.trim());
    }
    history.pushState(null, "", "/messages" + (q.toString() ? "?" + q : ""));
    route();
  });
  const results = el("div", { id: "results" }, el("p", { class: "muted", text: "Searching…" }));
  setMain(el("h1", { text: "Messages" }), el("div", { class: "panel" }, form), results);

  const q = new URLSearchParams();
  for (const [name] of SEARCH_FIELDS) if (params.get(name)) q.set(name, params.get(name));
  if (params.get("before_id")) q.set("before_id", params.get("before_id"));
  q.set("limit", "50");
  let data;
  try { data = await api("GET", "/api/messages?" + q); } catch (e) { results.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  if (!data.items.length) { results.replaceChildren(el("p", { class: "muted", id: "no-results", text: "No messages match." })); return; }
  const rows = data.items.map((m) => {
    const dl = Object.entries(m.deliveries || {}).map(([k, v]) => el("span", {}, badge(k), " ", v, " "));
    return el("tr", { class: "clickable", "data-id": m.id, onclick: () => location.assign("/messages/" + m.id) },
      el("td", {}, el("a", { href: "/messages/" + m.id, text: m.id })), el("td", { text: iso(m.received_at) }), el("td", { text: m.channel }),
      el("td", {}, badge(m.status)), el("td", { text: m.message_type || "–" }), el("td", { class: "mono", text: m.control_id || "–" }),
      el("td", { class: "mono", text: m.patient_id || (can("content") ? "–" : "hidden") }), el("td", {}, dl),
      el("td", { class: "error", text: m.error || "" }));
  });
  const table = el("table", { id: "message-table" },
    el("thead", {}, el("tr", {}, ["ID", "Received", "Channel", "Status", "Type", "Control ID", "Patient ID", "Deliveries", "Error"].map((h) => el("th", { text: h })))),
    el("tbody", {}, rows));
  const more = data.next_before_id ? el("button", { text: "Older →", onclick: () => {
    const p = new URLSearchParams(location.search); p.set("before_id", data.next_before_id);
    history.pushState(null, "", "/messages?" + p); route();
  } }) : null;
  results.replaceChildren(el("div", { class: "panel" }, table, el("div", { class: "actions" }, more)));
}

// ------------------------------------------------------------------------------------------- structure views
function hl7Table(structure) {
  const body = el("tbody");
  for (const seg of structure.segments) {
    body.append(el("tr", { class: "seg" }, el("td", { colspan: 3, text: `${seg.name}` })));
    for (const f of seg.fields) {
      body.append(el("tr", { class: "field", "data-field": f.id },
        el("td", { class: "fid", text: f.id }),
        el("td", { class: "fname", text: f.name ? `${f.name}${f.type ? " (" + f.type + ")" : ""}` : "" }),
        el("td", { class: "fval", text: f.value })));
      if (f.repetitions) {
        f.repetitions.forEach((rep, ri) => {
          for (const c of rep) {
            const label = f.repetitions.length > 1 ? `${f.id}[${ri + 1}].${c.n}` : `${f.id}.${c.n}`;
            body.append(el("tr", { class: "comp" }, el("td", { class: "fid", text: label }), el("td", { class: "fname", text: c.name }), el("td", { class: "fval", text: c.value })));
          }
        });
      }
    }
  }
  return el("table", { class: "segments hl7" }, body);
}

function x12Table(structure) {
  const body = el("tbody");
  let loop = null;
  for (const seg of structure.segments) {
    const head = el("td", { colspan: 3 }, seg.id, seg.name ? el("span", { class: "loop", text: seg.name }) : null,
      seg.loop && seg.loop !== loop ? el("span", { class: "loop", text: "loop " + seg.loop }) : null);
    loop = seg.loop;
    body.append(el("tr", { class: "seg" }, head));
    for (const e of seg.elements) {
      body.append(el("tr", { class: "field" }, el("td", { class: "fid", text: e.id }), el("td", { class: "fname", text: e.components ? e.components.join(" : ") : "" }), el("td", { class: "fval", text: e.value })));
    }
  }
  return el("table", { class: "segments x12" }, body);
}

function structureView(structure, rawText) {
  const wrap = el("div", { class: "content-view" });
  const views = [];
  if (structure && structure.kind === "hl7v2") views.push(["Segments", () => hl7Table(structure)]);
  if (structure && structure.kind === "x12") views.push(["Segments", () => x12Table(structure)]);
  if (structure && structure.kind === "fhir") views.push(["JSON", () => el("pre", { class: "fhir", text: structure.pretty })]);
  if (rawText !== null && rawText !== undefined) views.push(["Raw", () => el("pre", { class: "raw", text: rawText.replace(/\r\n?/g, "\n") })]);
  if (!views.length) return el("p", { class: "muted", text: "(no content)" });
  const tabs = el("div", { class: "tabs" });
  const pane = el("div", { class: "pane" });
  views.forEach(([label, make], i) => {
    const b = el("button", { type: "button", text: label, onclick: () => {
      for (const x of tabs.children) x.classList.remove("active");
      b.classList.add("active");
      pane.replaceChildren(make());
    } });
    tabs.append(b);
    if (i === 0) { b.classList.add("active"); pane.append(make()); }
  });
  wrap.append(tabs, pane);
  return wrap;
}

async function replay(id, destination) {
  try {
    const r = await api("POST", `/api/messages/${id}/replay`, destination ? { destination } : {});
    toast(`Queued ${r.queued} deliver${r.queued === 1 ? "y" : "ies"} again`);
  } catch (e) { toast(e.message, true); }
  setTimeout(route, 600);
}

async function pageMessage(id) {
  let m;
  try { m = await api("GET", "/api/messages/" + id); } catch (e) { setMain(el("h1", { text: "Message " + id }), el("p", { class: "error", text: e.message })); return; }
  const meta = el("dl", { class: "meta", id: "message-meta" });
  const add = (k, v) => meta.append(el("dt", { text: k }), el("dd", { text: v === null || v === undefined || v === "" ? "–" : v }));
  add("Channel", m.channel); add("Status", m.status); add("Received", iso(m.received_at)); add("Type", m.message_type);
  add("Control ID", m.control_id); add("Patient ID", m.content_visible ? m.patient_id : "hidden"); add("Sender", [m.sending_app, m.sending_facility].filter(Boolean).join(" / "));
  add("Format", `${m.content_type}, ${m.size} bytes`);
  if (m.content_visible) { add("Source", m.source_ref); add("Error", m.error ? `${m.error}${m.error_code ? " (code " + m.error_code + ")" : ""}` : null); }
  const actions = el("div", { class: "actions" });
  if (can("replay") && m.deliveries.length) actions.append(el("button", { class: "primary", id: "replay-all", text: "Replay all deliveries", onclick: () => replay(m.id) }));
  if (can("content")) actions.append(el("a", { href: `/api/messages/${m.id}/raw`, text: "Download raw" }));

  const content = m.content_visible ? el("div", { class: "panel", id: "raw-panel" }, el("h2", { text: "Received content" }), structureView(m.structure, m.raw))
    : el("div", { class: "panel" }, el("p", { class: "muted", text: "Your role does not show message content." }));

  const dels = m.deliveries.map((d) => {
    const box = el("section", { class: "delivery", "data-destination": d.destination },
      el("header", {}, el("span", { class: "name", text: "→ " + d.destination }), badge(d.status),
        el("span", { class: "muted", text: `route ${d.route || "–"} · ${d.attempts} attempt(s)${d.sent_at ? " · sent " + iso(d.sent_at) : ""}` }),
        can("replay") ? el("button", { class: "replay-one", text: "Replay", onclick: () => replay(m.id, d.destination) }) : null));
    if (m.content_visible) {
      if (d.last_error) box.append(el("p", { class: "error", text: "Last error: " + d.last_error }));
      box.append(el("h3", { text: "Sent content" }));
      if (d.content_is_raw) box.append(el("p", { class: "muted", text: d.content_type === m.content_type ? "The received content, unchanged." : "Dropped after sending." }));
      else box.append(structureView(d.structure, d.content));
      box.append(el("h3", { text: "Response / ACK" }));
      if (d.response) box.append(structureView(d.response_structure, d.response));
      else box.append(el("p", { class: "muted", text: "No response recorded." }));
    }
    if (d.attempt_log.length) {
      box.append(el("h3", { text: "Attempts" }), el("table", { class: "attempts" },
        el("thead", {}, el("tr", {}, ["#", "At", "Outcome", "Node", m.content_visible ? "Error / response" : ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, d.attempt_log.map((a) => el("tr", {}, el("td", { text: a.number }), el("td", { text: iso(a.at) }), el("td", {}, badge(a.outcome)),
          el("td", { text: a.node || "" }), el("td", { class: "mono", text: a.error || a.response || "" }))))));
    }
    return box;
  });
  setMain(el("p", {}, el("a", { href: "/messages", id: "back", text: "← messages", onclick: (ev) => { if (history.length > 1 && document.referrer) { ev.preventDefault(); history.back(); } } })),
    el("h1", { text: `Message ${m.id}` }), el("div", { class: "panel" }, meta, actions), content,
    el("h2", { text: "Deliveries" }), ...(dels.length ? dels : [el("p", { class: "muted", text: "None (filtered, rejected or not routed)." })]));
}

// ------------------------------------------------------------------------------------------- dead letters
async function pageDead() {
  const params = new URLSearchParams(location.search);
  const channel = params.get("channel") || "";
  const data = await api("GET", "/api/dead-letters?limit=200" + (channel ? "&channel=" + encodeURIComponent(channel) : ""));
  const actions = el("div", { class: "actions" });
  if (can("replay") && data.items.length) {
    actions.append(el("button", { class: "primary", id: "replay-dead", text: channel ? `Replay every dead delivery of ${channel}` : "Replay every dead delivery", onclick: async () => {
      if (!confirm("Queue every dead delivery again?")) return;
      try { const r = await api("POST", "/api/replay", channel ? { channel, statuses: ["dead"] } : { statuses: ["dead"] }); toast(`Queued ${r.queued} again`); } catch (e) { toast(e.message, true); }
      route();
    } }));
  }
  const rows = data.items.map((d) => el("tr", { class: "clickable", onclick: () => location.assign("/messages/" + d.message_id) },
    el("td", {}, el("a", { href: "/messages/" + d.message_id, text: d.message_id })), el("td", { text: d.channel }), el("td", { text: d.destination }),
    el("td", { text: iso(d.updated_at) }), num(d.attempts), el("td", { text: d.message_type || "–" }), el("td", { class: "mono", text: d.control_id || "–" }),
    el("td", { class: "error", text: d.last_error || "" })));
  setMain(el("h1", { text: "Dead letters" + (channel ? " — " + channel : "") }), actions,
    data.items.length ? el("div", { class: "panel" }, el("table", { id: "dead-table" },
      el("thead", {}, el("tr", {}, ["Message", "Channel", "Destination", "Gave up", "Attempts", "Type", "Control ID", "Last error"].map((h) => el("th", { text: h })))),
      el("tbody", {}, rows))) : el("p", { class: "muted", text: "No dead letters." }));
}

// ------------------------------------------------------------------------------------------- audit
async function pageAudit() {
  const params = new URLSearchParams(location.search);
  const form = el("form", { class: "search" });
  for (const [name, label] of [["user", "User"], ["action", "Action"], ["message_id", "Message ID"], ["channel", "Channel"], ["since", "Since"]]) {
    form.append(el("label", {}, label, el("input", { name, value: params.get(name) || "" })));
  }
  form.append(el("div", {}, el("button", { type: "submit", class: "primary", text: "Search" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const f of form.elements) if (f.name && f.value.trim()) q.set(f.name, f.value.trim());
    history.pushState(null, "", "/audit?" + q); route();
  });
  const q = new URLSearchParams();
  for (const k of ["user", "action", "message_id", "channel", "since", "before_id"]) if (params.get(k)) q.set(k, params.get(k));
  const data = await api("GET", "/api/audit?" + q);
  const rows = data.items.map((a) => el("tr", {}, el("td", { text: iso(a.at) }), el("td", { text: a.username }), el("td", { text: a.role || "" }),
    el("td", { text: a.action }), el("td", {}, a.message_id ? el("a", { href: "/messages/" + a.message_id, text: a.message_id }) : "–"),
    el("td", { text: a.channel || "" }), el("td", { class: "mono", text: JSON.stringify(a.detail) }), el("td", { text: a.remote || "" })));
  setMain(el("h1", { text: "Audit log" }), el("div", { class: "panel" }, form),
    el("div", { class: "panel" }, el("table", { id: "audit-table" }, el("thead", {}, el("tr", {}, ["When", "User", "Role", "Action", "Message", "Channel", "Detail", "From"].map((h) => el("th", { text: h })))), el("tbody", {}, rows))));
}

// ------------------------------------------------------------------------------------------- users
async function pageUsers() {
  const users = await api("GET", "/api/users");
  const out = el("div", { id: "token-out" });
  const rows = users.map((u) => el("tr", {}, el("td", { text: u.name }), el("td", { text: u.role }), el("td", { text: u.disabled ? "disabled" : "active" }),
    el("td", { text: u.has_password ? "password" : "token only" }),
    el("td", {}, el("button", { text: "New API token", onclick: async () => {
      try { const r = await api("POST", `/api/users/${encodeURIComponent(u.name)}/tokens`, {}); out.replaceChildren(el("p", {}, "Token for ", u.name, " (shown once): ", el("code", { text: r.token }))); }
      catch (e) { toast(e.message, true); }
    } }), " ", el("button", { text: u.disabled ? "Enable" : "Disable", onclick: async () => {
      try { await api("PATCH", `/api/users/${encodeURIComponent(u.name)}`, { disabled: !u.disabled }); route(); } catch (e) { toast(e.message, true); }
    } }))));
  const form = el("form", { class: "search" },
    el("label", {}, "Name", el("input", { name: "name", required: true })),
    el("label", {}, "Role", el("select", { name: "role" }, ["viewer", "operator", "analyst", "admin", "sender"].map((r) => el("option", { value: r, text: r })))),
    el("label", {}, "Password (empty: token only)", el("input", { name: "password", type: "password", autocomplete: "new-password" })),
    el("div", {}, el("button", { type: "submit", class: "primary", text: "Add user" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = form.elements;
    try {
      await api("POST", "/api/users", { name: f.namedItem("name").value, role: f.namedItem("role").value, password: f.namedItem("password").value || null });
      toast("User added"); route();
    } catch (e) { toast(e.message, true); }
  });
  setMain(el("h1", { text: "Users" }), el("div", { class: "panel" },
    el("table", { id: "users-table" }, el("thead", {}, el("tr", {}, ["Name", "Role", "State", "Login", ""].map((h) => el("th", { text: h })))), el("tbody", {}, rows)), out),
    el("h2", { text: "Add a user" }), el("div", { class: "panel" }, form));
}

// ------------------------------------------------------------------------------------------- router
async function route() {
  const path = location.pathname;
  let page = "overview";
  try {
    if (path === "/messages") { page = "messages"; await pageMessages(); }
    else if (path.startsWith("/messages/")) { page = "messages"; await pageMessage(encodeURIComponent(path.slice("/messages/".length))); }
    else if (path === "/dead-letters") { page = "dead"; await pageDead(); }
    else if (path === "/audit") { page = "audit"; await pageAudit(); }
    else if (path === "/users") { page = "users"; await pageUsers(); }
    else await pageOverview();
  } catch (e) {
    setMain(el("p", { class: "error", text: e.message }));
  }
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  document.body.dataset.page = page;
  document.body.dataset.ready = "1";
}

async function boot() {
  ME = await api("GET", "/api/me");
  document.getElementById("who").textContent = `${ME.name} (${ME.role})`;
  for (const a of document.querySelectorAll("#nav a[data-needs]")) a.hidden = !can(a.dataset.needs);
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } catch (e) { /* gone anyway */ }
    location.assign("/login");
  });
  window.addEventListener("popstate", route);
  await route();
}

boot().catch((e) => setMain(el("p", { class: "error", text: e.message })));
