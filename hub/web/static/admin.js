// Dead letters, the audit log, users.
import { api, badge, can, confirmDialog, details, el, go, iso, num, scroller, setMain, toast } from "./util.js";

export async function pageDead() {
  const params = new URLSearchParams(location.search);
  const channel = params.get("channel") || "";
  const data = await api("GET", "/api/dead-letters?limit=200" + (channel ? "&channel=" + encodeURIComponent(channel) : ""));
  const actions = el("div", { class: "actions" });
  if (can("replay") && data.items.length) {
    actions.append(el("button", { type: "button", class: "primary", id: "replay-dead", text: `Replay these ${data.items.length} dead deliveries…`, onclick: async () => {
      const list = el("ul", { class: "plan", id: "replay-plan" }, data.items.map((d) => el("li", { class: "will-queue", "data-message": d.message_id, "data-destination": d.destination },
        `message ${d.message_id} → ${d.destination} `, badge("dead"))));
      const ok = await confirmDialog({ title: `Queue ${data.items.length} dead deliveries again?`, ok: "Queue",
        body: el("div", {}, el("p", { text: "Exactly these deliveries are queued again (attempts reset); sent copies are not touched:" }), list,
          data.next_before_id ? el("p", { class: "warn-text", text: "More dead deliveries exist than are listed; only these are queued." }) : null) });
      if (!ok) return;
      const ids = [...new Set(data.items.map((d) => d.message_id))];
      try { const r = await api("POST", "/api/replay", { message_ids: ids, statuses: ["dead"], channel: channel || undefined }); toast(`Queued ${r.queued} again`); } catch (e) { toast(e.message, true); }
      window.dispatchEvent(new Event("hub:route"));
    } }));
  }
  const rows = data.items.map((d) => {
    const tr = el("tr", { class: "clickable", "data-id": d.message_id },
      el("td", {}, el("a", { href: "/messages/" + d.message_id, text: d.message_id })), el("td", { text: d.channel }), el("td", { text: d.destination }),
      el("td", { class: "nowrap", text: iso(d.updated_at) }), num(d.attempts), el("td", { class: "hide-narrow", text: d.message_type || "–" }), el("td", { class: "mono hide-narrow", text: d.control_id || "–" }),
      el("td", { class: "error wrap", text: d.last_error || "" }));
    tr.addEventListener("click", (ev) => { if (!ev.target.closest("a")) go("/messages/" + d.message_id); });
    return tr;
  });
  setMain(el("h1", { text: "Dead letters" + (channel ? " — " + channel : "") }), actions,
    data.items.length ? el("div", { class: "panel" }, scroller(el("table", { id: "dead-table" },
      el("thead", {}, el("tr", {}, [["Message"], ["Channel"], ["Destination"], ["Gave up"], ["Attempts", "num"], ["Type", "hide-narrow"], ["Control ID", "hide-narrow"], ["Last error"]].map(([h, c]) => el("th", { class: c || "", text: h })))),
      el("tbody", {}, rows)))) : el("p", { class: "muted", text: "No dead letters." }));
}

const ACTIONS = ["login", "login_failed", "view_message", "view_raw", "search", "replay", "replay_many", "pause", "resume", "enable", "disable",
  "config_check", "config_reload", "user_add", "user_change", "token_create", "token_revoke", "password_change"];

export async function pageAudit() {
  const params = new URLSearchParams(location.search);
  const form = el("form", { class: "search", id: "audit-form" });
  for (const [name, label] of [["user", "User"], ["action", "Action"], ["message_id", "Message ID"], ["channel", "Channel"], ["since", "Since"]]) {
    let input;
    if (name === "action") {
      input = el("select", { name, id: "a-action" }, el("option", { value: "", text: "any" }), ACTIONS.map((a) => el("option", { value: a, text: a })));
      input.value = params.get(name) || "";
    } else input = el("input", { name, value: params.get(name) || "" });
    form.append(el("label", {}, label, input));
  }
  form.append(el("div", { class: "form-buttons" }, el("button", { type: "submit", class: "primary", text: "Search" })));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const f of form.elements) if (f.name && f.value.trim()) q.set(f.name, f.value.trim());
    go("/audit?" + q);
  });
  const q = new URLSearchParams();
  for (const k of ["user", "action", "message_id", "channel", "since", "before_id"]) if (params.get(k)) q.set(k, params.get(k));
  const data = await api("GET", "/api/audit?" + q);
  const rows = data.items.map((a) => el("tr", { "data-action": a.action }, el("td", { class: "nowrap", text: iso(a.at) }), el("td", { text: a.username }), el("td", { class: "hide-narrow", text: a.role || "" }),
    el("td", { text: a.action }), el("td", {}, a.message_id ? el("a", { href: "/messages/" + a.message_id, text: a.message_id }) : "–"),
    el("td", { text: a.channel || "" }), el("td", { class: "detail wrap" }, details(a.detail)), el("td", { class: "hide-narrow", text: a.remote || "" })));
  setMain(el("h1", { text: "Audit log" }), el("div", { class: "panel" }, form),
    el("div", { class: "panel" }, scroller(el("table", { id: "audit-table" }, el("thead", {}, el("tr", {}, [["When"], ["User"], ["Role", "hide-narrow"], ["Action"], ["Message"], ["Channel"], ["Detail"], ["From", "hide-narrow"]].map(([h, c]) => el("th", { class: c || "", text: h })))), el("tbody", {}, rows)))));
}

export async function pageUsers() {
  const users = await api("GET", "/api/users");
  const out = el("div", { id: "token-out" });
  const rows = users.map((u) => el("tr", {}, el("td", { text: u.name }), el("td", { text: u.role }), el("td", {}, badge(u.disabled ? "disabled" : "ok")),
    el("td", { class: "hide-narrow", text: u.has_password ? "password" : "token only" }),
    el("td", {}, el("button", { type: "button", class: "small", text: "New API token", onclick: async () => {
      try { const r = await api("POST", `/api/users/${encodeURIComponent(u.name)}/tokens`, {}); out.replaceChildren(el("p", { class: "wrap" }, "Token for ", u.name, " (shown once): ", el("code", { text: r.token }))); }
      catch (e) { toast(e.message, true); }
    } }), " ", el("button", { type: "button", class: "small" + (u.disabled ? "" : " danger"), text: u.disabled ? "Enable" : "Disable…", onclick: async () => {
      if (!u.disabled && !(await confirmDialog({ title: `Disable ${u.name}?`, danger: true, ok: "Disable", body: el("p", { text: "Their sessions end and their API tokens stop working until enabled." }) }))) return;
      try { await api("PATCH", `/api/users/${encodeURIComponent(u.name)}`, { disabled: !u.disabled }); window.dispatchEvent(new Event("hub:route")); } catch (e) { toast(e.message, true); }
    } }))));
  const form = el("form", { class: "search" },
    el("label", {}, "Name", el("input", { name: "name", required: true })),
    el("label", {}, "Role", el("select", { name: "role" }, ["viewer", "operator", "analyst", "admin", "sender"].map((r) => el("option", { value: r, text: r })))),
    el("label", {}, "Password (empty: token only)", el("input", { name: "password", type: "password", autocomplete: "new-password" })),
    el("div", { class: "form-buttons" }, el("button", { type: "submit", class: "primary", text: "Add user" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = form.elements;
    try {
      await api("POST", "/api/users", { name: f.namedItem("name").value, role: f.namedItem("role").value, password: f.namedItem("password").value || null });
      toast("User added"); window.dispatchEvent(new Event("hub:route"));
    } catch (e) { toast(e.message, true); }
  });
  setMain(el("h1", { text: "Users" }), el("div", { class: "panel" },
    scroller(el("table", { id: "users-table" }, el("thead", {}, el("tr", {}, [["Name"], ["Role"], ["State"], ["Login", "hide-narrow"], [""]].map(([h, c]) => el("th", { class: c || "", text: h })))), el("tbody", {}, rows))), out),
    el("h2", { text: "Add a user" }), el("div", { class: "panel" }, form));
}
