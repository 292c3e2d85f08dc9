"""The review page driven in a real headless Chromium: log in, answer three requests by key
and by click, and the answers arrive on the labels topic."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import json_values
from tests.integration.review_support import (
    TOKEN,
    human_labels,
    make_request,
    port_open,
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
    from selenium.common.exceptions import StaleElementReferenceException
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
            wait = WebDriverWait(browser, 20, ignored_exceptions=[StaleElementReferenceException])
            browser.get(served.url + "/")
            wait.until(ec.url_contains("/login"))
            browser.find_element(By.NAME, "reviewer").send_keys("selena")
            browser.find_element(By.NAME, "token").send_keys(TOKEN)
            browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

            def shown() -> str:
                # Read inside the wait: the page may be replaced between finding and reading.
                return str(wait.until(lambda d: d.find_element(By.ID, "request-id").text))

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


# -- the README's recipe, as written ----------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"
REPO = README.parent


def readme_recipe() -> list[str]:
    """The command lines of the README's step-by-step review recipe."""
    text = README.read_text()
    start = text.index("## Reviewing")
    section = text[start : text.index("\n## ", start)]
    block = section.split("**Step by step**", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def _answer_first_request_in_chromium(url: str, token: str) -> str:
    """A person, in headless Chromium: log in, wait for the first request, press 2 (true)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        wait = WebDriverWait(browser, 120, ignored_exceptions=[StaleElementReferenceException])
        browser.get(url)
        wait.until(ec.url_contains("/login"))
        browser.find_element(By.NAME, "reviewer").send_keys("ana")
        browser.find_element(By.NAME, "token").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        # The page looks again every 3 s until the pipeline's first request is there.
        wait.until(ec.presence_of_element_located((By.ID, "request-id")))
        first = str(browser.find_element(By.ID, "request-id").text)
        buttons = browser.find_elements(By.CSS_SELECTOR, "button.choice")
        # Classes known before any label: the rules' and the default's answers.
        assert [b.text.removeprefix(k) for b, k in zip(buttons, "12", strict=True)] == [
            "false",
            "true",
        ]
        assert "1-2 answer" in browser.find_element(By.CLASS_NAME, "hint").text
        browser.find_element(By.TAG_NAME, "body").send_keys("2")
        wait.until(ec.text_to_be_present_in_element((By.CLASS_NAME, "notice"), "Saved."))
        return first
    finally:
        browser.quit()


def test_the_readme_recipe_with_a_person_answering_the_first_request_by_keyboard(
    backends: Any, tmp_path: Path
) -> None:
    """Issue 19: the README's review recipe, its commands run as written (the broker's printed
    export line pasted, the page on a free port); a person answers the fresh pipeline's very
    first request (made before any label) by keyboard in Chromium; status and the report show
    the answer learned, by source."""
    import os
    import signal
    import subprocess
    import sys

    from pipeline.kafka.embedded import free_port
    from tests.conftest import delete_pipelines
    from tests.integration.helpers import wait_for

    lines = readme_recipe()
    name = f"test-recipe-{os.urandom(4).hex()}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # The test's own pipeline name and Redis: the commands stay as written.
    env |= {"RIVERLINE_NAME": name, "RIVERLINE_REDIS_URL": backends.redis}
    (tmp_path / "configs").symlink_to(REPO / "configs")
    jobs: list[subprocess.Popen[str]] = []
    printed_export = ""
    answered = ""
    outputs: dict[str, str] = {}

    def shell(command: str, **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(["bash", "-c", command], env=env, cwd=tmp_path, text=True, **kw)

    try:
        for line in lines:
            command = line.split("  #", 1)[0].strip().replace("8765", str(port))
            if line.startswith("#"):
                assert "open http://127.0.0.1:8765/" in line
                # A person opens the page once the command says it serves.
                wait_for(lambda: port_open(port), 60, "the review page to listen")
                answered = _answer_first_request_in_chromium(
                    f"http://127.0.0.1:{port}/", env["RIVERLINE_REVIEW_TOKEN"]
                )
                continue
            if command.startswith("export RIVERLINE_KAFKA_BOOTSTRAP="):
                command = printed_export  # what a person pastes: the broker's own line
            if command.startswith("export "):
                shown = subprocess.run(
                    ["bash", "-c", f"{command} && env -0"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                env = dict(item.split("=", 1) for item in shown.stdout.split("\0") if "=" in item)
                continue
            if command.startswith("kill %"):
                for job in command.split()[1:]:
                    process = jobs[int(job.removeprefix("%")) - 1]
                    process.send_signal(signal.SIGTERM)
                    assert process.wait(timeout=60) == 0, job
                continue
            if command.endswith("&"):
                command = command.removesuffix("&").strip()
                if command == "riverline broker":
                    broker = shell(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                    assert broker.stdout is not None
                    printed_export = broker.stdout.readline().strip()
                    jobs.append(broker)
                else:
                    log = (tmp_path / f"job{len(jobs) + 1}.log").open("w")
                    jobs.append(shell(command, stdout=log, stderr=subprocess.STDOUT))
                continue
            if command.startswith("riverline status"):
                # "once learned": the status hash is refreshed every couple of seconds.
                def learned(command: str = command) -> bool:
                    done = shell(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    out, _ = done.communicate(timeout=60)
                    outputs["status"] = out
                    return "human 1" in out

                wait_for(learned, 120, "status to show the person's answer learned")
                continue
            done = shell(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = done.communicate(timeout=300)
            assert done.returncode == 0, (line, out, err)
            outputs[command.split()[1]] = out + err
    finally:
        for process in reversed(jobs):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
        delete_pipelines(backends, {name})
    assert answered == "0"  # the very first event's request, before any label existed
    assert "published 300 events and 0 labels" in outputs["replay"]
    assert "labels learned by source" in outputs["status"]
    page = next((tmp_path / "reports").glob(f"{name}-learning-curve.html")).read_text()
    assert "<td>labels learned from human</td><td>1</td>" in page


def test_an_answer_outside_the_allowed_labels_is_refused_on_the_page(make_config: Any) -> None:
    """Issue 19: with validation.labels [1, 2, 3] the page took 2.5, which the pipeline then
    dead-lettered. Now the page says the pipeline's reason and the request stays answerable."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    cfg = make_config(
        {
            "model": {"spec": "linear_model.LinearRegression"},
            "evaluation": {"metric": "MAE"},
            "validation": {"labels": [1, 2, 3]},
        }
    )
    publish_requests(cfg, [make_request(cfg, "r1", task="regression")])
    browser = _browser()
    try:
        with served_app(cfg) as served:
            wait = WebDriverWait(browser, 20, ignored_exceptions=[StaleElementReferenceException])
            browser.get(served.url + "/")
            wait.until(ec.url_contains("/login"))
            browser.find_element(By.NAME, "reviewer").send_keys("selena")
            browser.find_element(By.NAME, "token").send_keys(TOKEN)
            browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait.until(ec.presence_of_element_located((By.ID, "request-id")))
            field = browser.find_element(By.NAME, "value")
            assert (field.get_attribute("min"), field.get_attribute("max")) == ("1", "3")
            field.send_keys("2.5", Keys.ENTER)  # within the range, not an allowed label
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".notice.error")))
            error = browser.find_element(By.CSS_SELECTOR, ".notice.error").text
            assert "label_not_allowed" in error and "(1, 2, 3)" in error, error
            # Not marked answered: the same request, and an allowed answer is taken.
            assert browser.find_element(By.ID, "request-id").text == "r1"
            browser.find_element(By.NAME, "value").send_keys("2", Keys.ENTER)
            wait.until(ec.text_to_be_present_in_element((By.CLASS_NAME, "notice"), "Saved."))
    finally:
        browser.quit()
    labels = json_values(human_labels(cfg, 1))
    assert [(x["id"], x["label"]) for x in labels] == [("r1", 2)]
