"use strict";
// The login form: POST /api/login, then go where the user was headed (same-site paths only).
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("login-error");
  err.hidden = true;
  const body = {
    username: document.getElementById("username").value,
    password: document.getElementById("password").value,
  };
  let res;
  try {
    res = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (e) {
    err.textContent = "The hub did not answer.";
    err.hidden = false;
    return;
  }
  if (res.ok) {
    const next = new URLSearchParams(location.search).get("next") || "/";
    location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/");
    return;
  }
  let detail = "Login failed.";
  try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
  err.textContent = res.status === 401 ? "Wrong name or password." : String(detail);
  err.hidden = false;
});
