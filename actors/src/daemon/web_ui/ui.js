// maintd's web page: re-fetches the live part (/ui/live) every few seconds and swaps it
// in, and sends the buttons' requests to the API (/1/...). The browser adds the Basic
// credentials given at /login; without a user with the write option the API answers 401
// or 403, and the notice says so. Every request says X-Requested-With, so that maintd
// answers a 401 without a challenge, which the browser would turn into a password prompt.
"use strict";
(function () {
  const live = document.getElementById("live");
  const notice = document.getElementById("notice");
  const every = 1000 * (Number(document.body.dataset.refresh) || 2);
  const SCRIPT = { "X-Requested-With": "maintd-page" };
  let refreshing = false;

  function show(kind, text, loginLink) {
    notice.className = "notice " + kind;
    notice.textContent = text;
    if (loginLink) {
      const link = document.createElement("a");
      link.href = "/login";
      link.textContent = "Log in";
      notice.append(" ", link);
    }
    notice.hidden = false;
  }

  function markStale(text) {
    const updated = document.getElementById("updated");
    if (updated) {
      updated.textContent = text;
      updated.parentElement.classList.add("stale");
    }
  }

  async function refresh() {
    if (refreshing) return;
    refreshing = true;
    // What is being typed survives the swap.
    const reason = document.getElementById("pause-reason");
    const typed = reason ? reason.value : "";
    const focused = reason && document.activeElement === reason;
    const open = new Set(
      Array.from(live.querySelectorAll("tbody.incident details[open]"), (d) =>
        d.closest("tbody").dataset.uuid));
    try {
      const answer = await fetch("/ui/live", {
        credentials: "same-origin", cache: "no-store", headers: SCRIPT,
      });
      const type = answer.headers.get("content-type") || "";
      if (!type.startsWith("text/html")) {
        markStale("not refreshed: HTTP " + answer.status);
        return;
      }
      live.innerHTML = await answer.text();
      live.querySelectorAll("tbody.incident").forEach((body) => {
        const details = body.querySelector("details");
        if (details && open.has(body.dataset.uuid)) details.open = true;
      });
      const again = document.getElementById("pause-reason");
      if (again) {
        again.value = typed;
        if (focused) again.focus();
      }
    } catch (e) {
      markStale("not refreshed: maintd cannot be reached");
    } finally {
      refreshing = false;
    }
  }

  // Send one request of the buttons: "cancel" (an incident's uuid), "pause" (a reason,
  // may be empty) or "resume". Resolves to the HTTP status.
  async function act(action, argument) {
    let url;
    let body;
    let done;
    if (action === "cancel") {
      url = "/1/incidents/" + encodeURIComponent(argument) + "/cancel";
      done = "Incident canceled.";
    } else if (action === "pause") {
      url = "/1/pause";
      body = argument ? JSON.stringify({ reason: argument }) : undefined;
      done = "maintd is paused: no new action until resumed.";
    } else if (action === "resume") {
      url = "/1/resume";
      done = "maintd resumed.";
    } else {
      throw new Error("unknown action " + action);
    }
    let answer;
    try {
      answer = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: body ? { ...SCRIPT, "Content-Type": "application/json" } : SCRIPT,
        body: body,
      });
    } catch (e) {
      show("error", "The request did not reach maintd: " + e.message);
      return 0;
    }
    let message = "";
    try {
      message = (await answer.json()).message || "";
    } catch (e) {
      message = "";
    }
    if (answer.ok) {
      show("ok", done);
      const reason = document.getElementById("pause-reason");
      if (reason && action === "pause") reason.value = "";
    } else if (answer.status === 401) {
      show("error", "Refused: you are not logged in (401" + (message ? ": " + message : "") +
        "). Log in with a user that has the write option to act.", true);
    } else if (answer.status === 403) {
      show("error", "Refused (403): " + message);
    } else {
      show("error", "Refused (" + answer.status + "): " + message);
    }
    await refresh();
    return answer.status;
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    let argument;
    if (action === "cancel") {
      if (!window.confirm("Cancel the incident on " + button.dataset.node + "? maintd will " +
        "leave it alone until the node reports it no more.")) return;
      argument = button.dataset.uuid;
    } else if (action === "pause") {
      const reason = document.getElementById("pause-reason");
      argument = reason ? reason.value.trim() : "";
    }
    button.disabled = true;
    try {
      await act(action, argument);
    } finally {
      button.disabled = false;
    }
  });

  // For the browser's console and for scripts: maintd.act("cancel", uuid).
  window.maintd = { act: act, refresh: refresh };
  setInterval(refresh, every);
})();
