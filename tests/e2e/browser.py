"""Playwright helpers of the UI tests (test_ui_browser.py, test_ui_dashboard.py): Debian's chromium, login, trigger form.

Playwright's own browser download is not reachable from CI: the tests drive Debian's chromium
(installed by bin/install-browser, `make test` runs it), or the binary ``ETL_CHROMIUM`` names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ETL_CHROMIUM", "/usr/bin/chromium")


def launch(pw):
    """Chromium through Playwright; fails (never skips) naming bin/install-browser when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: run bin/install-browser (make test does) to install Debian's chromium")
    return pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])


def login(page, password: str, path: str, screenshot: Path | None = None, user: str = "admin") -> None:
    """Open ``path`` without a session: Airflow's login page; log in; back at ``path``."""
    from playwright.sync_api import expect

    page.goto(path)
    expect(page).to_have_url(re.compile(r"/auth/login"))
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(password)
    if screenshot is not None:
        page.screenshot(path=screenshot)
    page.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))  # back where the login was asked for


def open_trigger_form(page, dag_id: str):
    """The DAG's page → Trigger: the dialog, with its params' form shown."""
    from playwright.sync_api import expect

    page.goto(f"/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text(f"Trigger Dag - {dag_id}")).to_be_visible()
    expect(dialog.get_by_text("Run Parameters")).to_be_visible()
    return dialog
