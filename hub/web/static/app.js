// The hub dashboard (an ES module; its pages are the modules next to it): plain DOM, no framework, no CDN.
// A channel's page is /channels/NAME and the alerts /alerts; /?page=alerts and /?page=channel&name=NAME still work.
import { api, can, el, loadFeatures, setMain, state } from "./util.js";
import { pageAlerts, pageChannel, pageOverview } from "./overview.js";
import { pageMessage, pageMessages } from "./messages.js";
import { pageAudit, pageDead, pageUsers } from "./admin.js";

async function route() {
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  const view = params.get("page");
  let page = "overview";
  document.body.dataset.ready = "";
  try {
    if (path === "/messages") { page = "messages"; await pageMessages(); }
    else if (path.startsWith("/messages/")) { page = "messages"; await pageMessage(encodeURIComponent(path.slice("/messages/".length))); }
    else if (path === "/dead-letters") { page = "dead"; await pageDead(); }
    else if (path === "/audit") { page = "audit"; await pageAudit(); }
    else if (path === "/users") { page = "users"; await pageUsers(); }
    else if (path === "/alerts" || view === "alerts") { page = "alerts"; await pageAlerts(); }
    else if (path.startsWith("/channels/")) { page = "overview"; await pageChannel(decodeURIComponent(path.slice("/channels/".length))); }
    else if (view === "channel" && params.get("name")) { page = "overview"; await pageChannel(params.get("name")); }
    else await pageOverview();
  } catch (e) {
    setMain(el("p", { class: "error", text: e.message }));
  }
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  const channelPage = path.startsWith("/channels/") || view === "channel";
  document.body.dataset.page = channelPage ? "channel" : page;
  document.body.dataset.ready = "1";
}

// Links within the dashboard change the page without loading it again.
function intercept(ev) {
  const a = ev.target.closest("a[href]");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || a.hasAttribute("download") || a.target) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/") || url.pathname.startsWith("/static/") || url.pathname === "/login") return;
  ev.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) history.pushState(null, "", url.pathname + url.search);
  route();
  window.scrollTo(0, 0);
}

async function boot() {
  state.me = await api("GET", "/api/me");
  await loadFeatures();
  document.getElementById("who").textContent = `${state.me.name} (${state.me.role})`;
  for (const a of document.querySelectorAll("#nav a[data-needs]")) a.hidden = !can(a.dataset.needs);
  document.getElementById("logout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } catch (e) { /* gone anyway */ }
    location.assign("/login");
  });
  document.addEventListener("click", intercept);
  window.addEventListener("popstate", route);
  window.addEventListener("hub:route", route);
  await route();
}

boot().catch((e) => setMain(el("p", { class: "error", text: e.message })));
