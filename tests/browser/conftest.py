"""A real browser for the page tests: Debian's Chromium driven by Selenium through chromedriver.

Chromium comes from ``deploy/local/test-apt-packages.txt`` (installed by the test set-up);
where it cannot be installed the tests are skipped, saying so. Selenium is in the ``test``
extra, so its absence is an error, not a skip.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # the integration harness

WINDOW = (1400, 1900)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium session (Selenium ``WebDriver``), closed after the module."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(
            "Chromium cannot be found on this machine: install the Debian packages of "
            "deploy/local/test-apt-packages.txt (chromium, chromium-driver) to run the browser tests"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
