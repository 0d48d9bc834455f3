// Messages: the search (pickers, the search kept in the URL, saved searches, bulk selection, export) and one
// message (collapsed segments, a tab per destination's copy and response, a diff, replay that says what it queues).
import { age, api, badge, bodyTakes, can, confirmDialog, el, go, has, iso, num, scroller, setMain, toast, unavailable } from "./util.js";
import { contentView, diffView, tabs } from "./views.js";

const FILTERS = ["channel", "destination", "status", "since", "until", "control_id", "patient_id", "message_type", "text"];
const STATUSES = ["accepted", "filtered", "rejected", "error", "queued", "retry", "sending", "sent", "dead"];
const ROLLUP_ORDER = ["dead", "retry", "queued", "sending", "sent"];

// The status a list shows: the message's own, or the worst of its deliveries (a dead copy shows as dead).
export function rollup(m) {
  if (m.rollup) return m.rollup === "retry" ? "retrying" : m.rollup;
  const d = m.deliveries || {};
  for (const s of ROLLUP_ORDER) if (d[s]) return s === "retry" ? "retrying" : s;
  return m.status;
}

let CHANNELS = null;
async function channels() {
  if (!CHANNELS) CHANNELS = await api("GET", "/api/channels");
  return CHANNELS;
}

function select(name, label, options, value) {
  const s = el("select", { name, id: "f-" + name }, el("option", { value: "", text: "any" }), options.map((o) => el("option", { value: o, text: o })));
  s.value = options.includes(value) ? value : "";
  if (value && !options.includes(value)) { s.append(el("option", { value, text: value })); s.value = value; }
  return el("label", {}, label, s);
}

function savedSearches() {
  try { return JSON.parse(localStorage.getItem("hub.searches") || "[]"); } catch (e) { return []; }
}

export async function pageMessages() {
  const params = new URLSearchParams(location.search);
  const chans = await channels();
  const destsOf = (ch) => [...new Set(chans.filter((c) => !ch || c.name === ch).flatMap((c) => c.destinations.map((d) => d.name)))].sort();
  const form = el("form", { class: "search", id: "search-form" });
  const chSel = select("channel", "Channel", chans.map((c) => c.name), params.get("channel") || "");
  const dSel = select("destination", "Destination", destsOf(params.get("channel")), params.get("destination") || "");
  chSel.querySelector("select").addEventListener("change", (ev) => {
    const sel = dSel.querySelector("select");
    const keep = sel.value;
    const opts = destsOf(ev.target.value);
    sel.replaceChildren(el("option", { value: "", text: "any" }), ...opts.map((o) => el("option", { value: o, text: o })));
    sel.value = opts.includes(keep) ? keep : "";
  });
  form.append(chSel, dSel, select("status", "Status", STATUSES, params.get("status") || ""));
  const input = (name, label, placeholder) => el("label", {}, label, el("input", { name, id: "f-" + name, value: params.get(name) || "", placeholder }));
  form.append(input("since", "Since", "1h, 2026-03-10"), input("until", "Until", ""), input("control_id", "Control ID", ""),
    input("message_type", "Type", "ADT or ADT^A04"));
  if (can("content")) form.append(input("patient_id", "Patient ID", ""), input("text", "Text", ""));
  form.append(el("div", { class: "form-buttons" }, el("button", { type: "submit", class: "primary", id: "search-button", text: "Search" }),
    el("a", { href: "/messages", class: "button", id: "clear-search", text: "Clear" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const name of FILTERS) {
      const f = form.elements.namedItem(name);
      if (f && f.value.trim()) q.set(name, f.value.trim());
    }
    go("/messages" + (q.toString() ? "?" + q : ""));
  });

  const q = new URLSearchParams();
  for (const name of FILTERS) if (params.get(name)) q.set(name, params.get(name));
  const filterQuery = q.toString();
  const saved = el("div", { class: "saved", id: "saved-searches" });
  const drawSaved = () => {
    const list = savedSearches();
    saved.replaceChildren(el("span", { class: "muted small", text: "Saved searches: " }),
      list.length ? el("span", { class: "chips" }, list.map((s, i) => el("span", { class: "chip" }, el("a", { href: "/messages?" + s.q, text: s.name }),
        el("button", { type: "button", class: "link small", title: "Forget", text: "×", onclick: () => { const l = savedSearches(); l.splice(i, 1); localStorage.setItem("hub.searches", JSON.stringify(l)); drawSaved(); } })))) : el("span", { class: "muted small", text: "none" }),
      filterQuery ? el("button", { type: "button", class: "link small", id: "save-search", text: "☆ save this search", onclick: () => {
        const l = savedSearches();
        if (!l.some((s) => s.q === filterQuery)) l.push({ name: [...new URLSearchParams(filterQuery).entries()].map(([k, v]) => `${k}=${v}`).join(" "), q: filterQuery });
        localStorage.setItem("hub.searches", JSON.stringify(l.slice(-12))); drawSaved();
      } }) : null);
  };
  drawSaved();
  const exports = el("div", { class: "exports", id: "exports" });
  if (has("GET", "/api/messages/export.csv")) exports.append(el("a", { class: "button", id: "export-csv", href: "/api/messages/export.csv?" + filterQuery, download: "", text: "Export CSV" }));
  if (can("content") && has("GET", "/api/messages/export.zip")) exports.append(el("a", { class: "button", id: "export-zip", href: "/api/messages/export.zip?" + filterQuery, download: "", text: "Export raw (zip)" }));
  if (!exports.children.length) exports.append(el("span", { class: "muted small unavailable", text: "Export: not available on this hub yet." }));

  const results = el("div", { id: "results" }, el("p", { class: "muted", text: "Searching…" }));
  setMain(el("h1", { text: "Messages" }), el("div", { class: "panel" }, form, saved), results);

  if (params.get("before_id")) q.set("before_id", params.get("before_id"));
  q.set("limit", "50");
  let data;
  try { data = await api("GET", "/api/messages?" + q); } catch (e) { results.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  if (!data.items.length) { results.replaceChildren(el("p", { class: "muted", id: "no-results", text: "No messages match." }), exports); return; }

  const chosen = new Map();
  const count = el("span", { id: "selected-count", class: "muted", text: "" });
  const bulk = el("button", { type: "button", id: "bulk-replay", class: "primary", text: "Replay selected…", disabled: true, onclick: () => replayFlow([...chosen.keys()]) });
  const all = el("input", { type: "checkbox", id: "select-all", "aria-label": "select all" });
  const boxes = [];
  const refresh = () => {
    count.textContent = chosen.size ? `${chosen.size} selected` : "";
    bulk.disabled = !chosen.size;
    all.checked = chosen.size === boxes.length;
    all.indeterminate = chosen.size > 0 && chosen.size < boxes.length;
  };
  all.addEventListener("change", () => { for (const [b, m] of boxes) { b.checked = all.checked; if (all.checked) chosen.set(m.id, m); else chosen.delete(m.id); } refresh(); });
  const rows = data.items.map((m) => {
    const box = el("input", { type: "checkbox", class: "pick", "aria-label": "select message " + m.id, "data-id": m.id });
    box.addEventListener("change", () => { if (box.checked) chosen.set(m.id, m); else chosen.delete(m.id); refresh(); });
    boxes.push([box, m]);
    const dl = Object.entries(m.deliveries || {}).map(([k, v]) => el("span", { class: "nowrap" }, badge(k), " ", v, " "));
    const r = rollup(m);
    const tr = el("tr", { class: "clickable", "data-id": m.id, "data-rollup": r },
      can("replay") ? el("td", { class: "pickcell" }, box) : null,
      el("td", {}, el("a", { href: "/messages/" + m.id, text: m.id })), el("td", { class: "nowrap hide-narrow", text: iso(m.received_at) }), el("td", { text: m.channel }),
      el("td", {}, badge(r), r !== m.status ? el("span", { class: "muted small", text: " " + m.status }) : null),
      el("td", { text: m.message_type || "–" }), el("td", { class: "mono hide-narrow", text: m.control_id || "–" }),
      el("td", { class: "mono hide-narrow", text: m.patient_id || (can("content") ? "–" : "hidden") }), el("td", { class: "hide-narrow" }, dl),
      el("td", { class: "error wrap", text: m.error || "" }));
    tr.addEventListener("click", (ev) => { if (ev.target.closest("a, input, .pickcell")) return; go("/messages/" + m.id); });
    return tr;
  });
  const heads = [can("replay") ? el("th", { class: "pickcell" }, all) : null, ...[["ID"], ["Received", "hide-narrow"], ["Channel"], ["Status"], ["Type"], ["Control ID", "hide-narrow"]].map(([h, c]) => el("th", { class: c || "", text: h })),
    el("th", { class: "hide-narrow", text: "Patient ID" }), el("th", { class: "hide-narrow", text: "Deliveries" }), el("th", { text: "Error" })];
  const table = el("table", { id: "message-table" }, el("thead", {}, el("tr", {}, heads)), el("tbody", {}, rows));
  const more = data.next_before_id ? el("button", { type: "button", text: "Older →", onclick: () => {
    const p = new URLSearchParams(location.search); p.set("before_id", data.next_before_id); go("/messages?" + p);
  } }) : null;
  const bar = el("div", { class: "actions bulk", id: "bulk-bar" }, can("replay") ? [bulk, count] : null, el("span", { class: "spacer" }), exports);
  results.replaceChildren(el("div", { class: "panel" }, bar, scroller(table), el("div", { class: "actions" }, more)));
}

// ------------------------------------------------------------------------------------------- replay
const REPLAYABLE = new Set(["dead", "retry"]);  // queued/sending are on their way already; sent ones only when asked

// What a replay would queue, exactly: the hub's dry run when it has one, else worked out from each message.
async function planReplay(ids, includeSent, only) {
  if (!only && bodyTakes("POST", "/api/replay", "dry_run")) {
    const r = await api("POST", "/api/replay", { message_ids: ids, include_sent: includeSent, dry_run: true });
    return { queue: r.would_queue || [], reprocess: r.would_reprocess || [], server: true };
  }
  const queue = [], reprocess = [], skipped = [];
  for (const id of ids.slice(0, 200)) {
    const m = await api("GET", "/api/messages/" + id);
    if (!m.deliveries.length) { if (["rejected", "error", "filtered"].includes(m.status)) reprocess.push(id); continue; }
    for (const d of m.deliveries) {
      if (only && d.destination !== only) continue;
      const item = { message_id: m.id, delivery_id: d.id, destination: d.destination, status: d.status };
      if (REPLAYABLE.has(d.status) || (includeSent && d.status === "sent")) queue.push(item);
      else skipped.push(item);
    }
  }
  return { queue, reprocess, skipped, server: false };
}

async function runReplay(plan, ids, includeSent) {
  if (plan.server) {
    const r = await api("POST", "/api/replay", { message_ids: ids, include_sent: includeSent });
    return r.queued + (r.reprocessed ? r.reprocessed.length || 0 : 0);
  }
  let n = 0;  // one delivery at a time: exactly the ones listed
  for (const item of plan.queue) {  // include_sent: a hub that has it queues only what is not sent unless told
    n += (await api("POST", `/api/messages/${item.message_id}/replay`, { destination: item.destination, include_sent: item.status === "sent" })).queued;
  }
  for (const id of plan.reprocess) { await api("POST", `/api/messages/${id}/replay`, {}); n += 1; }
  return n;
}

function planList(plan) {
  const items = [];
  for (const q of plan.queue) items.push(el("li", { class: "will-queue", "data-message": q.message_id, "data-destination": q.destination },
    `message ${q.message_id} → ${q.destination} `, badge(q.status), q.status === "sent" ? el("strong", { class: "warn-text", text: " sent again" }) : null));
  for (const id of plan.reprocess) items.push(el("li", { class: "will-reprocess", "data-message": id }, `message ${id}: run through its channel again (it has no deliveries)`));
  const skipped = plan.skipped || [];
  return el("div", {},
    items.length ? el("div", {}, el("p", { text: `This will queue ${plan.queue.length} deliver${plan.queue.length === 1 ? "y" : "ies"}${plan.reprocess.length ? ` and reprocess ${plan.reprocess.length} message(s)` : ""}:` }),
      el("ul", { class: "plan", id: "replay-plan" }, items)) : el("p", { id: "replay-plan-empty", text: "Nothing to queue: every delivery is sent or on its way." }),
    skipped.length ? el("p", { class: "muted small", id: "replay-skipped", text: "Not queued: " + skipped.map((s) => `${s.message_id} → ${s.destination} (${s.status})`).join(", ") }) : null);
}

export async function replayFlow(ids, only) {
  let includeSent = false;
  let plan;
  try { plan = await planReplay(ids, includeSent, only); } catch (e) { toast(e.message, true); return; }
  const hasSent = !plan.server ? (plan.skipped || []).some((s) => s.status === "sent") : true;
  const box = el("input", { type: "checkbox", id: "include-sent" });
  const extra = hasSent && !only ? el("label", { class: "check" }, box, " also send the copies that were already sent again") : null;
  const pending = confirmDialog({ title: ids.length === 1 ? `Replay message ${ids[0]}${only ? " → " + only : ""}?` : `Replay ${ids.length} messages?`,
    body: planList(plan), ok: "Queue", extra });
  const dlg = confirmDialog.current;
  dlg.setOk(plan.queue.length + plan.reprocess.length > 0);
  box.addEventListener("change", async () => {
    includeSent = box.checked;
    try { plan = await planReplay(ids, includeSent, only); dlg.setBody(planList(plan)); dlg.setOk(plan.queue.length + plan.reprocess.length > 0); } catch (e) { toast(e.message, true); }
  });
  if (!(await pending)) return;
  try {
    const n = await runReplay(plan, ids, includeSent);
    toast(`Queued ${n} deliver${n === 1 ? "y" : "ies"} again`);
  } catch (e) { toast(e.message, true); }
  setTimeout(() => window.dispatchEvent(new Event("hub:route")), 600);
}

// ------------------------------------------------------------------------------------------- one message
function nextAttempt(d) {
  const at = d.next_attempt_at !== undefined ? d.next_attempt_at : (d.status === "retry" || d.status === "queued" ? d.next_at : null);
  if (!at) return "–";
  const wait = at - Date.now() / 1000;
  return iso(at) + (wait > 0 ? ` (in ${age(wait)})` : " (due)");
}

function deliveryPane(m, d) {
  const box = el("section", { class: "delivery", "data-destination": d.destination });
  if (d.last_error) box.append(el("p", { class: "error wrap" }, el("strong", { text: "Last error: " }), d.last_error));
  box.append(el("h3", { text: "Sent copy" }));
  if (d.content_is_raw) box.append(el("p", { class: "muted", text: d.content_type === m.content_type || !d.content_type ? "The received content, unchanged." : "Dropped after sending." }));
  else box.append(contentView(d.structure, d.content));
  box.append(el("h3", { text: "Response / ACK" }));
  box.append(d.response ? contentView(d.response_structure, d.response) : el("p", { class: "muted", text: "No response recorded." }));
  box.append(attempts(m, d));
  return box;
}

function attempts(m, d) {
  if (!d.attempt_log.length) return el("p", { class: "muted", text: "No attempts yet." });
  return el("div", {}, el("h3", { text: "Attempts" }), scroller(el("table", { class: "attempts" },
    el("thead", {}, el("tr", {}, ["#", "At", "Outcome", "Node", m.content_visible ? "Error / response" : ""].map((h) => el("th", { text: h })))),
    el("tbody", {}, d.attempt_log.map((a) => el("tr", {}, el("td", { text: a.number }), el("td", { class: "nowrap", text: iso(a.at) }), el("td", {}, badge(a.outcome)),
      el("td", { text: a.node || "" }), el("td", { class: "mono wrap", text: a.error || a.response || "" })))))));
}

export async function pageMessage(id) {
  let m;
  try { m = await api("GET", "/api/messages/" + id); } catch (e) { setMain(el("h1", { text: "Message " + id }), el("p", { class: "error", text: e.message })); return; }
  const counts = {};
  for (const d of m.deliveries) counts[d.status] = (counts[d.status] || 0) + 1;
  const r = rollup({ status: m.status, deliveries: counts, rollup: m.rollup });
  const meta = el("dl", { class: "meta", id: "message-meta" });
  const add = (k, v, cls) => meta.append(el("dt", { text: k }), el("dd", { class: cls || "" }, v === null || v === undefined || v === "" ? "–" : v));
  add("Channel", m.channel); add("Status", el("span", {}, badge(r), r !== m.status ? " " + m.status : ""), "nomono"); add("Received", iso(m.received_at)); add("Type", m.message_type);
  add("Control ID", m.control_id); add("Patient ID", m.content_visible ? m.patient_id : "hidden"); add("Sender", [m.sending_app, m.sending_facility].filter(Boolean).join(" / "));
  add("Format", `${m.content_type}, ${m.size} bytes`);
  if (m.content_visible) { add("Source", m.source_ref); add("Error", m.error ? `${m.error}${m.error_code ? " (code " + m.error_code + ")" : ""}` : null, "wrap error-dd"); }
  const actions = el("div", { class: "actions" });
  if (can("replay")) {
    if (m.deliveries.length) actions.append(el("button", { type: "button", class: "primary", id: "replay-all", text: "Replay…", onclick: () => replayFlow([m.id]) }));
    else if (["rejected", "error", "filtered"].includes(m.status)) actions.append(el("button", { type: "button", class: "primary", id: "reprocess", text: "Reprocess…", onclick: () => replayFlow([m.id]) }));
  }
  if (can("content")) actions.append(el("a", { class: "button", href: `/api/messages/${m.id}/raw`, text: "Download raw" }));

  const dtable = m.deliveries.length ? scroller(el("table", { id: "deliveries" }, el("thead", {}, el("tr", {}, [["Destination"], ["Status"], ["Route", "hide-narrow"], ["Attempts", "num"], ["Next attempt"], ["Sent", "hide-narrow"], ["Last error"], [""]].map(([h, c]) => el("th", { class: c || "", text: h })))),
    el("tbody", {}, m.deliveries.map((d) => el("tr", { "data-destination": d.destination, "data-status": d.status },
      el("td", { class: "strong", text: d.destination }), el("td", {}, badge(d.status)), el("td", { class: "muted hide-narrow", text: d.route || "–" }), num(d.attempts),
      el("td", { class: "nowrap next-attempt", text: nextAttempt(d) }), el("td", { class: "nowrap hide-narrow", text: d.sent_at ? iso(d.sent_at) : "–" }),
      el("td", { class: "error wrap", text: d.last_error || "" }),
      el("td", {}, can("replay") ? el("button", { type: "button", class: "replay-one small", text: d.status === "sent" ? "Send again…" : "Replay…", onclick: () => replayOne(m, d) }) : null))))))
    : el("p", { class: "muted", text: "No deliveries (filtered, rejected or not routed)." });

  const params = new URLSearchParams(location.search);
  const want = params.get("tab") || "received";
  const views = [];
  if (m.content_visible) {
    views.push(["Received", () => contentView(m.structure, m.raw), "received"]);
    for (const d of m.deliveries) views.push(["→ " + d.destination, () => deliveryPane(m, d), "d:" + d.destination]);
    const withCopy = m.deliveries;
    if (withCopy.length) views.push(["Diff", () => diffPane(m), "diff"]);
  } else {
    for (const d of m.deliveries) views.push(["→ " + d.destination, () => attempts(m, d), "d:" + d.destination]);
  }
  for (const v of views) v.push(v[2] === want);
  const content = views.length ? el("div", { class: "panel", id: "content-panel" }, m.content_visible ? null : el("p", { class: "muted", text: "Your role does not show message content." }),
    tabs(views, "main-tabs", (key) => { const q = new URLSearchParams(location.search); if (key === "received") q.delete("tab"); else q.set("tab", key); history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q : "")); }))
    : el("div", { class: "panel" }, el("p", { class: "muted", text: "Your role does not show message content." }));
  setMain(el("p", {}, el("a", { href: "/messages", id: "back", text: "← messages", onclick: (ev) => { if (history.length > 1 && history.state !== "first") { ev.preventDefault(); history.back(); } } })),
    el("div", { class: "title-row" }, el("h1", { text: `Message ${m.id}` }), badge(r)), el("div", { class: "panel" }, meta, actions),
    el("div", { class: "panel" }, el("h2", { text: "Deliveries" }), dtable), content);
}

function diffPane(m) {
  const sel = el("select", { id: "diff-destination", "aria-label": "destination" }, m.deliveries.map((d) => el("option", { value: d.destination, text: "received vs sent → " + d.destination })));
  const pane = el("div");
  const show = () => {
    const d = m.deliveries.find((x) => x.destination === sel.value);
    const sent = d.content_is_raw ? m.raw : d.content;
    pane.replaceChildren(d.content_is_raw && d.content_type && d.content_type !== m.content_type ? el("p", { class: "muted", text: "The sent copy was dropped after sending." })
      : diffView(m.raw, sent, "Received", "Sent → " + d.destination));
  };
  const changed = m.deliveries.find((d) => !d.content_is_raw);  // start with a copy that was changed
  if (changed) sel.value = changed.destination;
  sel.addEventListener("change", show);
  show();
  return el("div", {}, el("div", { class: "actions" }, sel), pane);
}

async function replayOne(m, d) {
  if (d.status === "sent" || d.status === "sending" || d.status === "queued") {
    const ok = await confirmDialog({ title: `Send message ${m.id} → ${d.destination} again?`, danger: d.status === "sent",
      body: el("div", {}, el("p", { text: `This delivery is ${d.status}. It will be queued again:` }),
        el("ul", { class: "plan", id: "replay-plan" }, el("li", { class: "will-queue", "data-message": m.id, "data-destination": d.destination }, `message ${m.id} → ${d.destination} `, badge(d.status), d.status === "sent" ? el("strong", { class: "warn-text", text: " sent again" }) : null))),
      ok: "Send again" });
    if (!ok) return;
    try { const r = await api("POST", `/api/messages/${m.id}/replay`, { destination: d.destination, include_sent: true }); toast(`Queued ${r.queued} deliver${r.queued === 1 ? "y" : "ies"} again`); } catch (e) { toast(e.message, true); }
    setTimeout(() => window.dispatchEvent(new Event("hub:route")), 600);
    return;
  }
  return replayFlow([m.id], d.destination);
}

export { unavailable };
