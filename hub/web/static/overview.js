// Overview (one compact row per channel, destinations on a click), a channel's page (control, charts, config)
// and the alerts page.
import { age, api, badge, can, confirmDialog, el, go, has, iso, num, scroller, setMain, toast, unavailable } from "./util.js";
import { jsonTree, lineChart, sparkline, yamlView } from "./views.js";

const OPEN = new Set();  // channels whose destinations are shown (kept across the 5-second refresh)

function health(c, o) {
  if (o && o.health) return o.health;
  if (c.error || c.state === "failed") return "error";
  const dead = c.destinations.reduce((a, d) => a + d.dead, 0);
  const oldest = Math.max(0, ...c.destinations.map((d) => d.oldest_queued_age || 0));
  if (dead || c.destinations.some((d) => d.last_error)) return "error";
  if (c.state !== "running" || oldest > 600 || c.destinations.some((d) => d.retry)) return "warn";
  return "ok";
}

function peerText(peers) {
  const out = [];
  if (!peers) return "";
  if (peers.mllp) for (const [ep, n] of Object.entries(peers.mllp)) out.push(`MLLP ${ep}: ${n} open`);
  if (peers.sftp_last_poll_age !== undefined) out.push(peers.sftp_last_poll_age === null ? "SFTP: no poll yet" : `SFTP polled ${age(peers.sftp_last_poll_age)} ago`);
  if (peers.sftp_error) out.push(`SFTP poll failing: ${peers.sftp_error}`);
  const known = new Set(["mllp", "sftp_last_poll", "sftp_last_poll_age", "sftp_error"]);
  for (const [k, v] of Object.entries(peers)) if (!known.has(k) && v !== null && v !== undefined && v !== "") out.push(`${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
  return out.join("; ");
}

export function channelLink(name) { return "/channels/" + encodeURIComponent(name); }

export async function pageOverview() {
  const [channels, overview] = await Promise.all([api("GET", "/api/channels"),
    has("GET", "/api/overview") ? api("GET", "/api/overview").catch(() => null) : Promise.resolve(null)]);
  const byName = new Map((overview || []).map((o) => [o.channel, o]));
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
  const card = (label, value, cls, href) => el(href ? "a" : "div", { class: "card", href }, el("div", { class: "label", text: label }), el("div", { class: "value " + (cls || ""), text: value }));
  const cards = el("div", { class: "cards", id: "summary" },
    card("Channels", channels.length),
    card("Received, last hour", received),
    card("Rejected, last hour", rejected, rejected ? "warn-text" : "", rejected ? "/messages?status=rejected&since=1h" : null),
    card("Waiting to send", queued, queued ? "warn-text" : ""),
    card("Dead letters", dead, dead ? "bad-text" : "", dead ? "/dead-letters" : null),
    card("Oldest waiting", age(oldest), oldest !== null && oldest > 600 ? "bad-text" : ""));

  const head = el("tr", {}, [["", ""], ["Channel", ""], ["State", ""], ["In / out, last hour", "hide-narrow"], ["In /h", "num hide-narrow"], ["Queued", "num"],
    ["Oldest", "num hide-narrow"], ["Dead", "num"], ["Peers", "hide-narrow"]].map(([h, cls]) => el("th", { class: cls, text: h })));
  const body = el("tbody");
  for (const c of channels) {
    const o = byName.get(c.name);
    const h = health(c, o);
    const cq = c.destinations.reduce((a, d) => a + d.queued + d.retry + d.sending, 0);
    const cd = c.destinations.reduce((a, d) => a + d.dead, 0);
    const co = o ? o.oldest_waiting_s : c.destinations.reduce((m, d) => (d.oldest_queued_age !== null && (m === null || d.oldest_queued_age > m) ? d.oldest_queued_age : m), null);
    const open = OPEN.has(c.name);
    const toggle = el("button", { type: "button", class: "link expand", "aria-expanded": String(open), title: "Destinations", text: open ? "▾" : "▸" });
    const spark = o && o.spark ? sparkline(o.spark.in || [], o.spark.out || []) : el("span", { class: "muted small", text: `${c.last_hour.per_minute}/min` });
    const row = el("tr", { class: "channel clickable" + (open ? " open" : ""), "data-channel": c.name, "data-health": h },
      el("td", { class: "hcell" }, el("span", { class: "dot " + h, title: "health: " + h }), toggle),
      el("td", { class: "cname" }, el("a", { href: channelLink(c.name), text: c.name, title: c.description || "" })),
      el("td", {}, badge(c.state), c.error ? el("span", { class: "bad-text small wrap", text: " " + c.error }) : null),
      el("td", { class: "hide-narrow" }, spark),
      num(c.last_hour.received, "hide-narrow"), num(o ? o.queued : cq, (o ? o.queued : cq) ? "warn-text" : ""), num(age(co), "hide-narrow" + (co > 600 ? " bad-text" : "")),
      num(o ? o.dead : cd, (o ? o.dead : cd) ? "bad-text" : ""),
      el("td", { class: "muted small hide-narrow ellipsis", title: peerText(c.peers), text: peerText(c.peers) }));
    body.append(row);
    const odest = new Map(((o && o.destinations) || []).map((x) => [x.destination, x]));
    const dests = c.destinations.map((d) => el("tr", { class: "dest", "data-destination": c.name + "/" + d.name, hidden: !open },
      el("td"), el("td", { class: "dname" }, "→ ", el("a", { href: `/messages?channel=${encodeURIComponent(c.name)}&destination=${encodeURIComponent(d.name)}`, text: d.name }),
        d.type ? el("span", { class: "muted", text: " (" + d.type + ")" }) : null),
      el("td", {}, d.last_error ? el("span", { class: "warn-text", text: "failing" }) : badge(d.worker === "running" ? "ok" : d.worker)),
      el("td", { class: "hide-narrow small muted wrap", text: d.last_error || `sent ${d.sent}` + (d.retry ? `, retrying ${d.retry}` : "") }),
      num(d.last_hour.sent, "hide-narrow"), num(d.queued + d.sending + d.retry, d.queued + d.sending + d.retry ? "warn-text" : ""),
      num(age(d.oldest_queued_age), "hide-narrow" + (d.oldest_queued_age > 600 ? " bad-text" : "")),
      el("td", { class: "num" + (d.dead ? " bad-text" : "") }, d.dead ? el("a", { href: `/messages?channel=${encodeURIComponent(c.name)}&destination=${encodeURIComponent(d.name)}&status=dead`, text: d.dead }) : "0"),
      el("td", { class: "muted small hide-narrow ellipsis", text: peerText((odest.get(d.name) || {}).peer) })));
    body.append(...dests);
    const flip = (ev) => {
      if (ev.target.closest("a")) return;
      const now = !OPEN.has(c.name);
      if (now) OPEN.add(c.name); else OPEN.delete(c.name);
      for (const d of dests) d.hidden = !now;
      toggle.textContent = now ? "▾" : "▸";
      toggle.setAttribute("aria-expanded", String(now));
      row.classList.toggle("open", now);
    };
    row.addEventListener("click", flip);
  }
  setMain(el("div", { class: "title-row" }, el("h1", { text: "Overview" }), el("a", { href: "/alerts", id: "alerts-link", text: "Alerts →" })), cards,
    el("div", { class: "panel tight" }, scroller(el("table", { id: "channels", class: "compact" }, el("thead", {}, head), body))),
    el("p", { class: "muted small", text: "Click a row for its destinations, a name for the channel's page. Refreshes every 5 seconds; rates cover the last hour." +
      (overview ? "" : " (Sparklines: not available on this hub yet.)") }));
  clearTimeout(pageOverview._timer);
  pageOverview._timer = setTimeout(() => { if (location.pathname === "/" && !location.search) pageOverview().catch(() => {}); }, 5000);
}

// ------------------------------------------------------------------------------------------- channel page
async function charts(name, destination, range, box) {
  box.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  if (!has("GET", "/api/charts")) { box.replaceChildren(unavailable("Charts")); return; }
  const q = new URLSearchParams({ channel: name, range });
  if (destination) q.set("destination", destination);
  let data;
  try { data = await api("GET", "/api/charts?" + q); } catch (e) { box.replaceChildren(el("p", { class: "error", text: e.message })); return; }
  const s = data.series || {};
  const lat = data.latency_ms || {};
  box.replaceChildren(el("div", { class: "charts" },
    lineChart({ received: s.received || [], sent: s.sent || [], errors: s.errors || [] }, { from: data.from, to: data.to, title: "Messages" }),
    lineChart({ queue: s.queue || [] }, { from: data.from, to: data.to, title: "Queue depth" })),
  el("p", { class: "latency", id: "latency" }, el("strong", { text: "ACK / delivery latency: " }),
    lat.count ? `p50 ${lat.p50} ms · p90 ${lat.p90} ms · p99 ${lat.p99} ms (${lat.count} deliveries)` : "no deliveries in this range"));
}

async function channelAction(c, action) {
  const what = {
    pause: [`Pause ${c.name}?`, `Its source stops taking messages on every node (senders wait or retry); queued deliveries keep going. Resume starts it again.`, "Pause", true],
    resume: [`Resume ${c.name}?`, "Its source takes messages again on every node.", "Resume", false],
    disable: [`Disable ${c.name}?`, "Its source and delivery workers stop on every node until it is enabled; queued deliveries wait.", "Disable", true],
    enable: [`Enable ${c.name}?`, "Its source and delivery workers start again on every node.", "Enable", false],
  }[action];
  if (!(await confirmDialog({ title: what[0], body: el("p", { text: what[1] }), ok: what[2], danger: what[3] }))) return;
  try {
    await api("POST", `/api/channels/${encodeURIComponent(c.name)}/${action}`);
    toast(`${c.name}: ${action} done`);
  } catch (e) { toast(e.message, true); }
}

export async function pageChannel(name) {
  const c = await api("GET", "/api/channels/" + encodeURIComponent(name));
  const controls = el("div", { class: "actions", id: "channel-controls" });
  if (can("channels")) {
    const act = (a, cls) => el("button", { type: "button", class: cls || "", id: "ch-" + a, text: a[0].toUpperCase() + a.slice(1) + "…",
      onclick: async () => { await channelAction(c, a); window.dispatchEvent(new Event("hub:route")); } });
    if (c.state === "running") controls.append(act("pause", "danger"));
    if (c.state === "paused") controls.append(act("resume", "primary"));
    if (c.state === "disabled") controls.append(act("enable", "primary"));
    else if (c.state !== "not configured") controls.append(act("disable", "danger"));
  }
  controls.append(el("a", { class: "button", href: "/messages?channel=" + encodeURIComponent(name), text: "Messages" }),
    el("a", { class: "button", href: "/dead-letters?channel=" + encodeURIComponent(name), text: "Dead letters" }));

  const dests = el("table", { id: "channel-destinations" }, el("thead", {}, el("tr", {}, ["Destination", "Type", "Queued", "Retry", "Sent", "Dead", "Oldest", "Last error"].map((h, i) => el("th", { class: i >= 2 && i <= 6 ? "num" : "", text: h })))),
    el("tbody", {}, c.destinations.map((d) => el("tr", { "data-destination": d.name }, el("td", { text: d.name }), el("td", { class: "muted", text: d.type || "" }),
      num(d.queued + d.sending), num(d.retry, d.retry ? "warn-text" : ""), num(d.sent), num(d.dead, d.dead ? "bad-text" : ""), num(age(d.oldest_queued_age)),
      el("td", { class: "error wrap", text: d.last_error || "" })))));

  const params = new URLSearchParams(location.search);
  let range = params.get("range") || "1h";
  let dest = params.get("destination") || "";
  const chartBox = el("div", { id: "charts" });
  const picker = el("div", { class: "actions", id: "chart-controls" },
    el("select", { id: "chart-destination", "aria-label": "destination" }, el("option", { value: "", text: "whole channel" }), c.destinations.map((d) => el("option", { value: d.name, text: "→ " + d.name }))),
    ["1h", "24h", "7d"].map((r) => el("button", { type: "button", class: "range" + (r === range ? " active" : ""), "data-range": r, text: r })));
  picker.querySelector("select").value = dest;
  const update = () => {
    const q = new URLSearchParams(location.search); q.set("range", range); if (dest) q.set("destination", dest); else q.delete("destination");
    history.replaceState(null, "", location.pathname + "?" + q);
    for (const b of picker.querySelectorAll("button.range")) b.classList.toggle("active", b.dataset.range === range);
    charts(name, dest, range, chartBox);
  };
  picker.addEventListener("click", (ev) => { const b = ev.target.closest("button.range"); if (b) { range = b.dataset.range; update(); } });
  picker.querySelector("select").addEventListener("change", (ev) => { dest = ev.target.value; update(); });

  const config = el("div", { id: "config" });
  setMain(el("p", {}, el("a", { href: "/", text: "← overview" })),
    el("div", { class: "title-row" }, el("h1", { text: name }), badge(c.state), el("span", { class: "muted", text: (c.source || "") + (c.description ? " — " + c.description : "") })),
    c.error ? el("p", { class: "error wrap", text: c.error }) : null, controls,
    el("div", { class: "panel" }, el("h2", { text: "Traffic" }), picker, chartBox),
    el("div", { class: "panel" }, el("h2", { text: "Destinations" }), scroller(dests)),
    config);
  charts(name, dest, range, chartBox);
  if (can("channels")) await channelConfig(name, config, c);
}

async function channelConfig(name, box, c) {
  const panel = el("div", { class: "panel" }, el("h2", { text: "Configuration" }));
  box.replaceChildren(panel);
  const check = el("button", { type: "button", id: "run-check", text: "Run hub check", onclick: async () => {
    try {
      const r = await api("POST", "/api/config/check");
      const problems = r.problems || r.errors || [];
      out.replaceChildren(problems.length ? el("ul", { class: "problems" }, problems.map((p) => el("li", { class: "error wrap", text: typeof p === "string" ? p : `${p.file || ""}:${p.line || ""} ${p.message || ""}` })))
        : el("p", { class: "ok-text", text: "hub check: no problems." }));
    } catch (e) { out.replaceChildren(el("p", { class: "error", text: e.message })); }
  } });
  const reload = el("button", { type: "button", id: "run-reload", text: "Reload config…", onclick: async () => {
    const ok = await confirmDialog({ title: "Reload the configuration?", ok: "Reload",
      body: el("p", { text: "hub check runs on the config folder as it is on disk; when it is clean every channel restarts from it (queues are kept; paused and disabled channels stay so). With problems nothing changes." }) });
    if (!ok) return;
    try { await api("POST", "/api/config/reload"); toast("Configuration reloaded"); } catch (e) { toast(e.message, true); }
    window.dispatchEvent(new Event("hub:route"));
  } });
  const out = el("div", { id: "check-out" });
  if (!has("GET", "/api/channels/{name}/config")) {
    panel.append(unavailable("The channel's YAML, its _test.yaml and last reload"), el("div", { class: "actions" }, check, reload), out);
    if (c.config) panel.append(el("h3", {}, el("span", { class: "mono", text: c.file || "" }), el("span", { class: "muted", text: " (settings as loaded, secrets hidden)" })), el("div", { class: "json-tree" }, jsonTree(c.config)));
    return;
  }
  let cfg;
  try { cfg = await api("GET", `/api/channels/${encodeURIComponent(name)}/config`); } catch (e) { panel.append(el("p", { class: "error", text: e.message })); return; }
  const lr = cfg.last_reload;
  panel.append(el("p", { class: "muted", id: "last-reload" }, lr ? `Last reload ${iso(lr.at)} by ${lr.by || "–"}: ${lr.ok ? "ok" : "failed"}` : "Not reloaded since the start."));
  const problems = cfg.problems || [];
  panel.append(el("h3", { text: "hub check" }), problems.length
    ? el("ul", { class: "problems", id: "problems" }, problems.map((p) => el("li", { class: "error wrap" }, el("span", { class: "mono", text: `${p.file || ""}${p.line ? ":" + p.line : ""} ` }), p.message)))
    : el("p", { class: "ok-text", id: "problems", text: "No problems." }), el("div", { class: "actions" }, check, reload), out);
  const files = [[cfg.file, cfg.yaml, "yaml"]];
  if (cfg.test_file) files.push([cfg.test_file, cfg.test_yaml, "test"]);
  for (const [file, text, key] of files) {
    const view = yamlView(text);
    for (const p of problems) if (p.file === file && p.line) { const l = view.querySelector(`[data-line="${p.line}"]`); if (l) { l.classList.add("y-problem"); l.title = p.message; } }
    panel.append(el("h3", {}, el("span", { class: "mono", text: file || "" }), el("span", { class: "muted", text: " (read-only)" })), el("div", { class: "yaml-box", "data-file": key }, view));
  }
  if (!cfg.test_file) panel.append(el("p", { class: "muted", text: "No _test.yaml for this channel." }));
}

// ------------------------------------------------------------------------------------------- alerts
export async function pageAlerts() {
  setMain(el("h1", { text: "Alerts" }), el("p", { class: "muted", text: "Loading…" }));
  if (!has("GET", "/api/alerts")) { setMain(el("h1", { text: "Alerts" }), unavailable("Alerts")); return; }
  const data = await api("GET", "/api/alerts");
  const link = (a) => {
    const m = a.messages || {};
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(m)) if (v) q.set(k, v);
    if (!q.has("channel") && a.channel) q.set("channel", a.channel);
    if (!q.has("destination") && a.destination && m.destination !== undefined) q.set("destination", a.destination);
    return el("a", { href: "/messages?" + q, class: "alert-messages", text: "messages" });
  };
  const table = (items, recent) => items.length ? scroller(el("table", { class: "alerts " + (recent ? "recent" : "firing") },
    el("thead", {}, el("tr", {}, ["Severity", "Rule", "Channel", "Since", recent ? "Resolved" : null, "Summary", ""].filter((h) => h !== null).map((h) => el("th", { text: h })))),
    el("tbody", {}, items.map((a) => el("tr", { "data-alert": a.id, "data-rule": a.rule },
      el("td", {}, badge(a.severity)), el("td", { class: "mono", text: a.rule }),
      el("td", {}, a.channel ? el("a", { href: channelLink(a.channel), text: a.channel + (a.destination ? " → " + a.destination : "") }) : "–"),
      el("td", { text: iso(a.since) }), recent ? el("td", { text: iso(a.resolved_at) }) : null,
      el("td", { class: "wrap", text: a.summary }), el("td", {}, link(a)))))))
    : el("p", { class: "muted", text: recent ? "Nothing resolved recently." : "Nothing is firing." });
  setMain(el("h1", { text: "Alerts" }),
    el("div", { class: "panel", id: "firing" }, el("h2", { text: `Firing now (${data.firing.length})` }), table(data.firing, false)),
    el("div", { class: "panel", id: "recent" }, el("h2", { text: "Recently resolved" }), table(data.recent || [], true)));
}

export { go };
