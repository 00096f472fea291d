"""Headless Chromium for the tests of the project's web pages (the attention page, the chat page).

The browser is Debian's `chromium` with its `chromium-driver`, which `make test` installs through
apt when they are missing (tools/install_browser.sh). selenium drives it with both paths given
explicitly, so selenium never tries to download a driver or a browser of its own.

    from tests._browser import chromium_driver

    def test_page(tmp_path):
        with chromium_driver() as driver:          # skips the test, with one line, where no browser is
            driver.get(page.as_uri())
            ...

Where the browser cannot be had (no apt, not root, no selenium), the test is skipped with one line
naming what is missing; under CI (CI=true) a missing browser fails instead, since `make test` was
meant to install it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

import pytest

BROWSER_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_PATHS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _first_existing(paths: tuple[str, ...], name: str) -> str | None:
    for path in paths:
        if os.path.exists(path):
            return path
    return shutil.which(name)


def _missing(what: str) -> None:
    message = (f"no headless browser: {what} (install Debian's chromium and chromium-driver: "
               f"`bash tools/install_browser.sh`, which `make test` runs)")
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def chromium_driver(width: int = 1280, height: int = 900) -> Iterator["object"]:
    """A selenium WebDriver on headless Chromium, quit on exit. Skips (fails under CI) if none."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("the Python package selenium is not installed (it is in the test extra)")
    browser = _first_existing(BROWSER_PATHS, "chromium")
    driver_path = _first_existing(DRIVER_PATHS, "chromedriver")
    if browser is None:
        _missing("no chromium binary found")
    if driver_path is None:
        _missing("no chromedriver binary found")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
