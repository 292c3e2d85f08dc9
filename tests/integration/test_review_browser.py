"""The review page driven in a real headless Chromium: log in, answer three requests by key
and by click, and the answers arrive on the labels topic."""

from __future__ import annotations

import shutil
import time
from typing import Any

import pytest

from tests.integration.helpers import json_values
from tests.integration.review_support import (
    TOKEN,
    human_labels,
    make_request,
    publish_requests,
    served_app,
)

pytestmark = pytest.mark.integration

SCREENSHOT = "/tmp/review-page.png"


def _browser() -> Any:
    """Headless Chromium through Debian's chromedriver, or a skip saying what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(
            "no browser: install Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver; .ci/run does it where apt-get exists)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,860",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_a_reviewer_in_chromium_answers_three_requests(make_config: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    cfg = make_config()
    publish_requests(
        cfg,
        [
            make_request(cfg, "b1", deadline=time.time() + 900),
            make_request(cfg, "b2", classes=["ham", "spam", "phishing"]),
            make_request(cfg, "b3"),
        ],
    )
    browser = _browser()
    try:
        with served_app(cfg) as served:
            wait = WebDriverWait(browser, 20)
            browser.get(served.url + "/")
            wait.until(ec.url_contains("/login"))
            browser.find_element(By.NAME, "reviewer").send_keys("selena")
            browser.find_element(By.NAME, "token").send_keys(TOKEN)
            browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

            def shown() -> str:
                wait.until(ec.presence_of_element_located((By.ID, "request-id")))
                return str(browser.find_element(By.ID, "request-id").text)

            def answered(request_id: str) -> None:
                # The page says "Saved." (fixed messages only) and moves past the request.
                def moved_on(driver: Any) -> bool:
                    if not driver.find_elements(By.CLASS_NAME, "notice"):
                        return False
                    ids = driver.find_elements(By.ID, "request-id")
                    return not ids or ids[0].text != request_id

                wait.until(moved_on)

            assert shown() == "b1"
            assert browser.find_element(By.ID, "queue-length").text == "3"
            # The model's explanation beside its answer.
            why = browser.find_element(By.ID, "model-why").text
            assert "has_ip = True: +0.210" in why and "url_length = 0.31: -0.080" in why
            browser.save_screenshot(SCREENSHOT)
            body = browser.find_element(By.TAG_NAME, "body")
            body.send_keys("2")  # the shortcut for the second class: true
            answered("b1")

            assert shown() == "b2"
            buttons = browser.find_elements(By.CSS_SELECTOR, "button.choice")
            assert [b.get_attribute("data-key") for b in buttons] == ["1", "2", "3"]
            assert [b.text.removeprefix(k) for b, k in zip(buttons, "123", strict=True)] == [
                "ham",
                "spam",
                "phishing",
            ]
            buttons[2].click()
            answered("b2")

            assert shown() == "b3"
            browser.find_element(By.TAG_NAME, "body").send_keys("1")
            answered("b3")
            wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "main"), "Nothing to review"))
            assert browser.find_element(By.ID, "my-count").text == "3"
            assert browser.find_element(By.ID, "queue-length").text == "0"
    finally:
        browser.quit()
    labels = json_values(human_labels(cfg, 3))
    assert [(x["id"], x["label"], x["source"], x["reviewer"]) for x in labels] == [
        ("b1", True, "human", "selena"),
        ("b2", "phishing", "human", "selena"),
        ("b3", False, "human", "selena"),
    ]
