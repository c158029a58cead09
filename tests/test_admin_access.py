"""The admin routes are never open: an empty or short token stops start-up (compose once passed
SATROUTER_ADMIN_TOKEN="" and then "Authorization: Bearer" with nothing after it opened
/admin/status, margins by agent and policy reload); no token means the routes are off."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings

from .conftest import offline_service

ADMIN = [
    ("GET", "/admin/status"),
    ("GET", "/admin/margins?group_by=agent"),
    ("GET", "/admin/topups"),
    ("POST", "/admin/policy/reload"),
]
EMPTY_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": ""},
]


@pytest.mark.parametrize("token", ["", "   ", "0123456789abcde"])
def test_an_empty_or_short_admin_token_is_refused(token: str) -> None:
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(admin_token=token)


async def test_no_admin_token_means_the_routes_are_off(tmp_path: Path) -> None:
    async with offline_service(tmp_path) as http:
        for method, path in ADMIN:
            for headers in EMPTY_CREDENTIALS:
                answer = await http.request(method, path, headers=headers)
                assert answer.status_code == 403, (path, headers)
                assert answer.headers["Content-Type"].startswith("application/problem+json")


async def test_an_empty_bearer_does_not_open_the_admin_routes(tmp_path: Path) -> None:
    async with offline_service(tmp_path, admin_token="admin-secret-for-tests") as http:
        for method, path in ADMIN:
            for headers in EMPTY_CREDENTIALS:
                answer = await http.request(method, path, headers=headers)
                assert answer.status_code == 401, (path, headers)
        ok = await http.get(
            "/admin/topups", headers={"Authorization": "Bearer admin-secret-for-tests"}
        )
        assert ok.status_code == 200
