"""Speak to the sidebar the way sidebar.js does: sign in once, then only the bearer token."""

from __future__ import annotations

import re

PASSWORD = "correct horse battery"


class Sidebar:
    """One agent's sidebar on one ticket, speaking to the app as sidebar.js does."""

    def __init__(self, client, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}", "X-Sidebar": "1"}

    def get(self, path: str, **kw):
        return self.client.get(f"/sidebar{path}", headers=self.headers, **kw)

    def post(self, path: str, data: dict, **kw):
        return self.client.post(f"/sidebar{path}", data=data, headers=self.headers, **kw)

    def verify(self, customer_id: str):
        data = {"customer_id": customer_id, "email": "on", "organisation": "on", "tenant": "on"}
        response = self.post("/verify", data)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    def preview(self, **form) -> tuple[int, str, str | None]:
        response = self.post("/actions/preview", form)
        page = response.get_data(as_text=True)
        intent = re.search(r'name="intent" value="([^"]+)"', page)
        return response.status_code, page, intent.group(1) if intent else None

    def confirm(self, intent: str):
        return self.post("/actions", {"intent": intent})


def open_sidebar(app, email: str, ticket: int) -> Sidebar:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/login", data={"csrf_token": csrf, "email": email, "password": PASSWORD})
    page = client.get(f"/sidebar/tickets/{ticket}").get_data(as_text=True)
    token = re.search(r'name="sidebar-token" content="([^"]+)"', page).group(1)
    return Sidebar(app.test_client(), token)  # a fresh client: no cookie, only the token
