// The ticket page's behaviour: the composer's Reply / Internal note tabs, forms that send once,
// and a thread that stays current without a reload. The thread is fetched as HTML the server
// rendered (and escaped): every few seconds, sooner while a plan is running, and at once when
// the sidebar beside it says an action finished. No inline script, so the CSP forbids them all.
(function () {
  "use strict";

  const live = document.getElementById("ticket-live");
  const sidebar = document.querySelector('iframe[title="Billing sidebar"]');
  const IDLE_MS = 5000;
  const BUSY_MS = 1000;
  let timer = null;
  let stopped = false;
  let last = null; // the fragment as last fetched: replaced only when the server's changes

  // --- the composer's tabs --------------------------------------------------------------------

  const composer = document.querySelector("[data-composer]");
  if (composer) {
    const tabs = Array.from(composer.querySelectorAll("[data-tab]"));
    const select = function (chosen) {
      tabs.forEach(function (tab) {
        const current = tab === chosen;
        tab.setAttribute("aria-selected", current ? "true" : "false");
        document.getElementById(tab.getAttribute("aria-controls")).hidden = !current;
      });
    };
    composer.querySelector(".composer-tabs").hidden = false;
    tabs.forEach(function (tab) {
      tab.addEventListener("click", function () {
        select(tab);
        const panel = document.getElementById(tab.getAttribute("aria-controls"));
        panel.querySelector("textarea").focus();
      });
    });
    select(tabs[0]);
  }

  // A second click while the first submission is on its way sends nothing more (the server
  // would make one reply of both anyway: the form carries its own key).
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form.dataset.sent) {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "1";
    setTimeout(function () {
      form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    }, 0); // after the submitter's name and value are in the form data
  });

  // Back from an error page, the browser may restore the page as it was: ready to send again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    document.querySelectorAll("form[data-sent]").forEach(function (form) {
      delete form.dataset.sent;
      form.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
    });
  });

  // --- the live thread ------------------------------------------------------------------------

  if (!live) return;

  function isBusy() {
    const state = live.querySelector("[data-busy]");
    return state !== null && state.dataset.busy === "yes";
  }

  function schedule() {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(refresh, isBusy() ? BUSY_MS : IDLE_MS);
  }

  async function refresh() {
    clearTimeout(timer);
    if (document.hidden) {
      schedule();
      return;
    }
    try {
      const response = await fetch(live.dataset.refresh, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
      if (response.redirected) {
        stopped = true; // signed out: the next page load asks for the sign-in
        return;
      }
      if (response.ok) {
        const html = await response.text();
        if (html !== last) {
          live.innerHTML = html;
          last = html;
        }
      }
    } catch (error) {
      // Offline for a moment: the next round tries again.
    }
    schedule();
  }

  // The sidebar posts this when one of its actions has finished (sidebar.js).
  window.addEventListener("message", function (event) {
    if (event.origin !== window.location.origin) return;
    if (!sidebar || event.source !== sidebar.contentWindow) return;
    if (event.data && event.data.billingDesk === "action-finished") refresh();
  });

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });

  schedule();
})();
