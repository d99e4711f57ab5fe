"""The web console in a real browser: Debian's chromium, driven by selenium through chromedriver.

The page must load, show what real clients did, draw its charts, keep client-chosen strings as text, and
abort a hanging transaction behind a confirmation. With ONCELOG_SCREENSHOTS=DIR the test also saves the
screenshots the README shows (`ONCELOG_SCREENSHOTS=docs/images pytest tests/observability -k browser`).
Without chromium the test skips, unless ONCELOG_REQUIRE_BROWSER=1 (set by .ci/run), where it fails.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from oncelog.testing import EmbeddedBroker
from tests.observability.conftest import StartBroker

pytestmark = pytest.mark.timeout(120)

HOSTILE_ID = "<img src=x onerror=window.pwned=1>"


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("ONCELOG_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def broker(start_http_broker: StartBroker) -> EmbeddedBroker:
    # The coordinator's own timeout reaper is kept away, so a transaction past its timeout stays hanging.
    return start_http_broker(**{"transaction.abort.timed.out.transaction.cleanup.interval.ms": "600000"})


def _wait(what: str, condition: Callable[[], Any], timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # the element is not there yet, or was just re-rendered
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _text_when(browser: Any, selector: str, wanted: Callable[[str], bool]) -> str:
    """The text of the element at `selector` once `wanted(text)` (the page re-renders as data changes)."""
    from selenium.webdriver.common.by import By

    seen: list[str] = []

    def check() -> str | None:
        text = str(browser.find_element(By.CSS_SELECTOR, selector).text)
        seen.append(text)
        return text if wanted(text) else None

    try:
        return str(_wait(selector, check))
    except AssertionError:
        raise AssertionError(f"{selector}: never as wanted; last seen {seen[-1:]!r}") from None


def _hanging_transaction(broker: EmbeddedBroker, transactional_id: str) -> Producer:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": transactional_id,
                         "transaction.timeout.ms": 1000, "log_level": 0})
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce("orders", b"undecided", partition=0)
    producer.flush(10)
    return producer


def _color_pixels(driver: Any, canvas_id: str, rgb: tuple[int, int, int]) -> int:
    return int(driver.execute_script("""
        const canvas = document.getElementById(arguments[0]);
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < data.length; i += 4) {
          if (Math.abs(data[i] - arguments[1]) < 8 && Math.abs(data[i + 1] - arguments[2]) < 8 &&
              Math.abs(data[i + 2] - arguments[3]) < 8 && data[i + 3] > 200) count++;
        }
        return count;""", canvas_id, *rgb))


def test_the_console_shows_the_broker_and_aborts_a_hanging_transaction(broker: EmbeddedBroker, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    producer = Producer({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    for index in range(20):
        producer.produce("orders", f"order-{index}".encode(), partition=0)
    producer.flush(10)
    _hanging_transaction(broker, "stuck-app")
    _hanging_transaction(broker, HOSTILE_ID)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "billing", "log_level": 0,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(["orders"])
    _wait("an assignment", lambda: consumer.poll(0.2) or consumer.assignment())
    consumer.commit(offsets=[TopicPartition("orders", 0, 5)], asynchronous=False)
    time.sleep(1.2)  # both transactions are now past their 1 s timeout: hanging

    base = f"http://127.0.0.1:{broker.server.http_port}"
    browser.get(f"{base}/?interval=300")
    _text_when(browser, 'tr[data-topic="orders"]', lambda text: "orders" in text)
    # partition, log start, LSO (pinned by the undecided transactions), high watermark
    _text_when(browser, 'tr[data-partition="orders-0"]', lambda text: text.split()[:4] == ["0", "0", "20", "22"])
    for index in range(20):  # traffic while the page watches: the throughput line has something to show
        producer.produce("orders", f"late-{index}".encode(), partition=0)
    producer.flush(10)
    _wait("two points on each chart", lambda: all(
        int(browser.find_element(By.ID, canvas).get_attribute("data-points") or 0) >= 2
        for canvas in ("throughput-chart", "lag-chart")))
    assert _color_pixels(browser, "throughput-chart", (0x15, 0x65, 0xC0)) > 20  # the first series' line
    assert _color_pixels(browser, "lag-chart", (0x15, 0x65, 0xC0)) > 20
    screenshots = os.environ.get("ONCELOG_SCREENSHOTS")
    if screenshots:
        browser.save_screenshot(str(Path(screenshots) / "console-topics.png"))

    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="groups"]').click()
    # committed, high watermark, lag
    _text_when(browser, 'tr[data-lag="billing/orders-0"]', lambda text: text.split()[1:] == ["5", "42", "37"])

    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="transactions"]').click()
    stuck = browser.find_element(By.CSS_SELECTOR, 'tr[data-transactional-id="stuck-app"]')
    assert "hanging" in stuck.get_attribute("class") and "Ongoing" in stuck.text
    hostile = browser.find_element(By.CSS_SELECTOR, "tr.hanging:not([data-transactional-id='stuck-app'])")
    assert HOSTILE_ID in hostile.text  # shown as text, never parsed as HTML
    assert browser.execute_script("return window.pwned === undefined")
    if screenshots:
        browser.save_screenshot(str(Path(screenshots) / "console-transactions.png"))

    stuck.find_element(By.CSS_SELECTOR, "button.abort").click()
    alert = _wait("the confirmation", lambda: browser.switch_to.alert)
    assert "stuck-app" in alert.text
    alert.dismiss()  # a second thought: nothing happens
    time.sleep(0.7)
    assert "Ongoing" in browser.find_element(By.CSS_SELECTOR, 'tr[data-transactional-id="stuck-app"]').text
    browser.find_element(By.CSS_SELECTOR, 'tr[data-transactional-id="stuck-app"] button.abort').click()
    _wait("the confirmation", lambda: browser.switch_to.alert).accept()
    _wait("the abort", lambda: "CompleteAbort" in browser.find_element(
        By.CSS_SELECTOR, 'tr[data-transactional-id="stuck-app"]').text)
    assert "aborted stuck-app" in browser.find_element(By.ID, "action").text

    browser.find_element(By.CSS_SELECTOR, 'nav button[data-tab="producers"]').click()
    producers = _wait("the producers table", lambda: browser.find_element(By.CSS_SELECTOR, "#producer-table tbody"))
    assert len(producers.find_elements(By.TAG_NAME, "tr")) == 2  # both transactional ones (the plain one is not
    # idempotent: partitions do not remember it)
    consumer.close()
