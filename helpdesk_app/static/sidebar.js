// The sidebar's behaviour: forms become fetches that carry the sidebar token in a header, and
// the HTML the server renders (and escapes) replaces a region. No inline script anywhere, so the
// Content-Security-Policy can forbid it; nothing here builds HTML from data.
(function () {
  "use strict";

  const token = document.querySelector('meta[name="sidebar-token"]').content;
  const base = document.querySelector('meta[name="sidebar-base"]').content;
  const sheet = document.getElementById("sheet");
  const POLL_MS = 700;

  function headers() {
    return { Authorization: "Bearer " + token, "X-Sidebar": "1" };
  }

  async function load(url, options) {
    const response = await fetch(url, Object.assign({ credentials: "omit" }, options, { headers: headers() }));
    return { ok: response.ok, html: await response.text() };
  }

  function place(targetId, html) {
    const target = document.getElementById(targetId);
    target.innerHTML = html;
    if (target === sheet) {
      sheet.hidden = false;
      const confirm = sheet.querySelector("[data-confirm]");
      if (confirm) confirm.focus();
    }
    watch(target);
  }

  async function refreshPanel() {
    const result = await load(base + "/panel");
    place(result.ok ? "panel" : "sheet", result.html);
  }

  // An action in progress: poll its status until it is done, then show fresh Stripe data.
  function watch(root) {
    const polling = root.querySelector("[data-poll]");
    if (polling) {
      setTimeout(async function () {
        const result = await load(polling.dataset.poll);
        const holder = document.createElement("div");
        holder.innerHTML = result.html;
        const next = holder.firstElementChild;
        polling.replaceWith(next);
        watch(next.parentElement || root);
      }, POLL_MS);
    } else if (root === sheet && sheet.querySelector("[data-done]")) {
      refreshPanel();
      tellHelpdesk();
    }
  }

  // The built-in helpdesk's ticket page refreshes its thread when an action finishes. Only a
  // page of our own origin hears it: framed by Zendesk or Help Scout, nobody does.
  function tellHelpdesk() {
    if (window.parent !== window) {
      window.parent.postMessage({ billingDesk: "action-finished" }, window.location.origin);
    }
  }

  document.addEventListener("submit", async function (event) {
    const form = event.target;
    if (!form.matches("form[data-remote]")) return;
    event.preventDefault();
    if (form.dataset.busy) return; // a second click while the first is in flight
    form.dataset.busy = "1";
    const buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    const data = new FormData(form);
    if (event.submitter && event.submitter.name) data.append(event.submitter.name, event.submitter.value);
    const method = (form.getAttribute("method") || "get").toUpperCase();
    let url = form.action;
    const options = { method: method };
    if (method === "GET") {
      url += (url.includes("?") ? "&" : "?") + new URLSearchParams(data).toString();
    } else {
      options.body = new URLSearchParams(data);
    }
    try {
      const result = await load(url, options);
      // Refusals and mistakes always open in the sheet, never over the panel.
      place(result.ok ? form.dataset.target : "sheet", result.html);
    } catch (error) {
      place("sheet", '<div class="sheet-body"><p class="notice notice-error">Could not reach Billing Desk. Check your connection and try again.</p><div class="buttons"><button type="button" class="btn" data-close-sheet>Close</button></div></div>');
    } finally {
      delete form.dataset.busy;
      buttons.forEach(function (b) { b.disabled = false; });
    }
  });

  document.addEventListener("click", function (event) {
    const toggle = event.target.closest("[data-toggle]");
    if (toggle) {
      const target = document.getElementById(toggle.dataset.toggle);
      if (target) target.hidden = !target.hidden;
      return;
    }
    if (event.target.closest("[data-close-sheet]")) {
      sheet.hidden = true;
      sheet.innerHTML = "";
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !sheet.hidden) {
      sheet.hidden = true;
      sheet.innerHTML = "";
    }
  });
})();
