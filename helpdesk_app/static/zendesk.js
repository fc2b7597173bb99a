// Inside Zendesk: ask ZAF which ticket is open, then load our sidebar for it with a form post
// (the bootstrap token rides in the body, never in a URL). Who the agent is comes from the
// JWT Zendesk signed, never from here: ZAF's currentUser is not sent.
(function () {
  "use strict";
  const client = window.ZAFClient.init();
  client.invoke("resize", { width: "100%", height: "640px" });
  client
    .get(["ticket.id", "ticket.subject", "ticket.requester.email", "ticket.requester.name",
          "ticket.organization.name"])
    .then(function (data) {
      const form = document.getElementById("zendesk-ticket");
      form.ticket_id.value = data["ticket.id"] || "";
      form.subject.value = data["ticket.subject"] || "";
      form.requester_email.value = data["ticket.requester.email"] || "";
      form.requester_name.value = data["ticket.requester.name"] || "";
      form.organization.value = data["ticket.organization.name"] || "";
      form.submit();
    })
    .catch(function () {
      document.getElementById("loading").textContent = "Zendesk did not share the ticket. Reload the app.";
    });
})();
