"""The reviewer's web app against the real broker and Redis: answers become human labels,
claims keep two reviewers apart, deadlines empty the queue, and strangers are refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from pipeline.kafka.embedded import free_port
from tests.integration.helpers import json_values, wait_for, write_config
from tests.integration.review_support import (
    TOKEN,
    Served,
    api,
    call,
    human_labels,
    make_request,
    next_request,
    page_once_it_shows,
    port_open,
    publish_requests,
    served_app,
)

pytestmark = pytest.mark.integration


def test_a_scripted_reviewer_answers_through_the_api_and_the_answers_are_human_labels(
    make_config: Any,
) -> None:
    cfg = make_config({"kafka": {"partitions": 2}})
    requests = [
        make_request(cfg, "e1"),
        make_request(cfg, "e2", key="customer-9"),
        make_request(cfg, "e3", classes=["ham", "spam", "phishing"]),
        make_request(cfg, "e4", task="regression"),
    ]
    partitions = publish_requests(cfg, requests)
    truth: dict[str, Any] = {"e1": True, "e2": False, "e3": "phishing", "e4": 4.75}
    with served_app(cfg) as served:
        seen = []
        while (request := next_request(served, "script")) is not None:
            seen.append(request["id"])
            assert request["features"]["domain"] == "paypa1.example"
            assert request["model"]["model_version"] == 41
            # Not an answer: refused, the request stays.
            bad = api(served, "POST", "/api/answer", {"id": request["id"], "label": "maybe"})
            assert bad.status == 422, bad.body
            reply = api(
                served, "POST", "/api/answer", {"id": request["id"], "label": truth[request["id"]]}
            )
            assert reply.status == 200, reply.body
            again = api(served, "POST", "/api/answer", {"id": request["id"], "label": True})
            assert again.status == 409, again.body
        assert sorted(seen) == ["e1", "e2", "e3", "e4"]
        stats = api(served, "GET", "/api/next", reviewer="script").json()
        assert (stats["waiting"], stats["answered"]) == (0, 4)
    records = human_labels(cfg, 4)
    assert len(records) == 4
    by_id = {json.loads(r.value)["id"]: r for r in records}
    for request in requests:
        record = by_id[request.id]
        label = json.loads(record.value)
        assert label["label"] == truth[request.id]
        assert type(label["label"]) is type(truth[request.id])
        assert label["source"] == "human" and label["reviewer"] == "script"
        assert label["answered_at"] == label["ts"] and label["ts"] > request.requested_at
        assert record.key == (request.key or request.id).encode()
        assert record.partition == partitions[request.id]  # co-partitioned with the request


def test_two_reviewers_on_two_servers_never_get_the_same_request(make_config: Any) -> None:
    cfg = make_config()
    ids = [f"r{i}" for i in range(12)]
    publish_requests(cfg, [make_request(cfg, i) for i in ids])
    served_to: dict[str, list[str]] = {"alice": [], "bob": []}
    errors: list[BaseException] = []
    with served_app(cfg) as first, served_app(cfg) as second:
        # Each holds one request: the other may not answer it, and gets another one.
        a = next_request(first, "alice")
        b = next_request(second, "bob")
        assert a is not None and b is not None and a["id"] != b["id"]
        stolen = api(second, "POST", "/api/answer", {"id": a["id"], "label": True}, "bob")
        assert stolen.status == 409, stolen.body
        assert next_request(first, "alice") == a  # a reload shows the same request

        def work(served: Any, reviewer: str) -> None:
            try:
                while (request := next_request(served, reviewer)) is not None:
                    served_to[reviewer].append(request["id"])
                    reply = api(
                        served,
                        "POST",
                        "/api/answer",
                        {"id": request["id"], "label": True},
                        reviewer,
                    )
                    assert reply.status == 200, reply.body
            except BaseException as e:
                errors.append(e)

        threads = [
            threading.Thread(target=work, args=(first, "alice")),
            threading.Thread(target=work, args=(second, "bob")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        counts = api(first, "GET", "/api/stats").json()
    assert not set(served_to["alice"]) & set(served_to["bob"])
    assert sorted(served_to["alice"] + served_to["bob"]) == sorted(ids)
    assert served_to["alice"] and served_to["bob"]
    assert counts["answers"] == {r: len(served_to[r]) for r in served_to}
    labels = json_values(human_labels(cfg, len(ids)))
    assert sorted(label["id"] for label in labels) == sorted(ids)
    assert {label["id"]: label["reviewer"] for label in labels} == {
        i: r for r, served in served_to.items() for i in served
    }


def test_a_request_past_its_deadline_leaves_the_queue(make_config: Any) -> None:
    cfg = make_config()
    now = time.time()
    publish_requests(
        cfg,
        [
            make_request(cfg, "late", deadline=now - 1.0),
            make_request(cfg, "soon", deadline=now + 3.0),
            make_request(cfg, "open"),
        ],
    )
    with served_app(cfg) as served:
        first = next_request(served, "ana")
        assert first is not None and first["id"] == "soon"
        # Skipped by ana: she gets the next; others would still get it until its deadline.
        assert api(served, "POST", "/api/skip", {"id": "soon"}, "ana").status == 200
        second = next_request(served, "ana")
        assert second is not None and second["id"] == "open"
        assert api(served, "GET", "/api/next", reviewer="ana").json()["waiting"] == 2
        wait_for(lambda: time.time() > now + 3.2, 10, "the deadline to pass")
        assert api(served, "GET", "/api/next", reviewer="ana").json()["waiting"] == 1
        assert next_request(served, "ben") is None  # "open" is ana's; "soon" has expired
        gone = api(served, "POST", "/api/answer", {"id": "soon", "label": True}, "ben")
        assert gone.status == 404, gone.body
        assert (
            api(served, "POST", "/api/answer", {"id": "open", "label": False}, "ana").status == 200
        )
        assert api(served, "GET", "/api/stats").json()["expired_seen"] == 2
    labels = json_values(human_labels(cfg, 1))
    assert [label["id"] for label in labels] == ["open"]


def test_a_replayed_request_gets_its_whole_deadline_from_publication(make_config: Any) -> None:
    # The pipeline's times are event time: replaying last year's data, a request made (in event
    # time) a year ago with 60 s to answer is still 60 s away from its deadline when published.
    cfg = make_config()
    year_ago = time.time() - 365 * 86_400
    publish_requests(
        cfg,
        [make_request(cfg, "old", deadline=year_ago + 60.0, requested_at=year_ago)],
    )
    with served_app(cfg) as served:
        served_request = next_request(served, "ana")
        assert served_request is not None and served_request["id"] == "old"
        answered = api(served, "POST", "/api/answer", {"id": "old", "label": True}, "ana")
        assert answered.status == 200, answered.body
        assert api(served, "GET", "/api/stats").json()["expired_seen"] == 0
    assert [label["id"] for label in json_values(human_labels(cfg, 1))] == ["old"]


def _login(served: Any, reviewer: str, token: str) -> tuple[int, str | None]:
    reply = call(
        "POST",
        served.url + "/login",
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": served.url},
        urlencode({"reviewer": reviewer, "token": token}).encode(),
    )
    cookie = reply.headers.get("set-cookie")
    return reply.status, cookie.split(";")[0] if cookie else None


def test_no_token_a_wrong_token_and_a_cross_site_post_are_refused(make_config: Any) -> None:
    cfg = make_config()
    publish_requests(cfg, [make_request(cfg, "x1"), make_request(cfg, "x2")])
    with served_app(cfg) as served:
        # The JSON API: bearer token required.
        assert api(served, "GET", "/api/next", token=None).status == 401
        assert api(served, "GET", "/api/next", token="wrong").status == 401
        assert (
            api(served, "POST", "/api/answer", {"id": "x1", "label": True}, token=None).status
            == 401
        )
        assert api(served, "POST", "/api/skip", {"id": "x1"}, token="wrong").status == 401
        # A POST a cross-site form could send (not JSON), and one from another origin.
        plain = call(
            "POST",
            served.url + "/api/answer",
            {"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"},
            json.dumps({"id": "x1", "label": True}).encode(),
        )
        assert plain.status == 403
        evil_api = call(
            "POST",
            served.url + "/api/answer",
            {
                "Authorization": f"Bearer {TOKEN}",
                "Content-Type": "application/json",
                "Origin": "https://evil.example",
            },
            json.dumps({"id": "x1", "label": True}).encode(),
        )
        assert evil_api.status == 403

        # The page: no session goes to the login form; a wrong token gets no session.
        page = call("GET", served.url + "/")
        assert page.status == 303 and page.headers["location"] == "/login"
        status, cookie = _login(served, "carla", "wrong")
        assert status == 401 and cookie is None
        status, cookie = _login(served, "carla", TOKEN)
        assert status == 303 and cookie is not None
        html = page_once_it_shows(served, cookie, 'id="request-id"', "a request")
        request_id = re.search(r'id="request-id">([^<]+)<', html).group(1)  # type: ignore[union-attr]
        csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        form = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}

        def post(headers: dict[str, str], fields: dict[str, str]) -> Any:
            return call("POST", served.url + "/answer", headers, urlencode(fields).encode())

        answer = {"id": request_id, "choice": "1"}
        # Without the CSRF token, with a wrong one, and from another site: refused.
        assert post({**form, "Origin": served.url}, answer).status == 403
        assert post({**form, "Origin": served.url}, {**answer, "csrf": "forged"}).status == 403
        cross = {**answer, "csrf": csrf}
        assert post({**form, "Origin": "https://evil.example"}, cross).status == 403
        referer = {**form, "Referer": "https://evil.example/page"}
        assert post(referer, cross).status == 403
        # A forged cookie is no session at all.
        assert post({**form, "Cookie": cookie + "0", "Origin": served.url}, cross).status == 401
        assert api(served, "GET", "/api/stats").json()["answers"] == {}
        # The same form post from the page itself is taken.
        done = post({**form, "Origin": served.url}, cross)
        assert done.status == 303 and "notice=" in done.headers["location"]
    labels = json_values(human_labels(cfg, 1))
    assert [(label["id"], label["label"], label["reviewer"]) for label in labels] == [
        (request_id, True, "carla")
    ]


def _cli_env(backends: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    return {
        **env,
        "RIVERLINE_REDIS_URL": backends.redis,
        "RIVERLINE_KAFKA_BOOTSTRAP": backends.kafka,
    }


def test_the_web_command_refuses_to_start_without_a_token_off_loopback(
    make_config: Any, backends: Any, tmp_path: Path
) -> None:
    config_file = write_config(make_config(), tmp_path / "review.yaml")
    env = _cli_env(backends)
    base = [sys.executable, "-m", "pipeline.cli", "review", "--web", "--config", str(config_file)]
    for extra, says in [
        ([], "RIVERLINE_REVIEW_TOKEN"),
        (["--no-auth", "--host", "0.0.0.0"], "loopback only"),
    ]:
        done = subprocess.run([*base, *extra], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr


def test_the_web_command_serves_the_queue_with_a_token(
    make_config: Any, backends: Any, tmp_path: Path
) -> None:
    cfg = make_config()
    publish_requests(cfg, [make_request(cfg, "w1")])
    config_file = write_config(cfg, tmp_path / "review.yaml")
    port = free_port()
    env = {**_cli_env(backends), "RIVERLINE_REVIEW_TOKEN": TOKEN}
    args = ["review", "--web", "--port", str(port), "--config", str(config_file)]
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        served = Served(f"http://127.0.0.1:{port}")
        wait_for(lambda: process.poll() is not None or port_open(port), 60, "the app")
        assert process.poll() is None, process.communicate()[1]
        assert api(served, "GET", "/api/next", token="nope").status == 401
        request = next_request(served, "cli")
        assert request is not None and request["id"] == "w1"
        reply = api(served, "POST", "/api/answer", {"id": "w1", "label": False}, "cli")
        assert reply.status == 200, reply.body
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    labels = json_values(human_labels(cfg, 1))
    assert [(label["id"], label["label"], label["source"]) for label in labels] == [
        ("w1", False, "human")
    ]


def answer_once_the_broker_takes_it(queue: Any, request_id: str, reviewer: str, value: Any) -> Any:
    """Answer as a person would after a 503: again, until the broker takes it. The producer
    may still be reconnecting when the proxy comes back (its backoff grows under load), and a
    refused answer must leave the request as it was, which the caller's asserts check."""
    from consumers.review.queue import ReviewError

    deadline = time.monotonic() + 30
    while True:
        try:
            return queue.answer(request_id, reviewer, value)
        except ReviewError as e:
            if e.status != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.parametrize(
    "timeouts",
    [
        # The producer gives the record up (its delivery timeout) before the app stops waiting.
        {"publish_timeout_s": 5.0, "delivery_timeout_ms": 2000, "request_timeout_ms": 1000},
        # The app stops waiting first, while the producer still holds the record and would send
        # it once the broker is back: a refused answer must not land later.
        {"publish_timeout_s": 1.0},
    ],
    ids=["producer-expires-it", "app-stops-waiting"],
)
def test_an_answer_the_broker_did_not_take_is_refused_and_can_be_given_again(
    make_config: Any, timeouts: dict[str, Any]
) -> None:
    from consumers.review import open_review_queue
    from consumers.review.queue import ReviewError
    from pipeline.kafka.embedded import BrokerUnavailable, EmbeddedBroker, broker_binary
    from tests.integration.helpers import TcpProxy

    try:
        broker_binary()
    except BrokerUnavailable as e:
        pytest.skip(f"needs the embedded broker to cut it off: {e}")
    broker_port, proxy_port = free_port(), free_port()
    proxy = TcpProxy(proxy_port, broker_port).start()
    with EmbeddedBroker(port=broker_port, advertised_port=proxy_port):
        cfg = make_config({"kafka": {"bootstrap": f"127.0.0.1:{proxy_port}"}})
        publish_requests(cfg, [make_request(cfg, "o1")])
        with open_review_queue(cfg, f"127.0.0.1:{proxy_port}", **timeouts) as queue:
            wait_for(lambda: queue.next("olga") is not None, 20, "the request")
            proxy.cut()
            # An accept() already waiting lets one more connection through: spend it here.
            wait_for(lambda: not port_open(proxy_port), 10, "the proxy to refuse connections")
            with pytest.raises(ReviewError) as refused:
                queue.answer("o1", "olga", True)
            assert refused.value.status == 503
            proxy.restore()
            assert queue.next("olga") is not None  # still waiting, still hers
            label = answer_once_the_broker_takes_it(queue, "o1", "olga", False)
        labels = json_values(human_labels(cfg, 1))
        assert labels == [json.loads(label.model_dump_json())]
        assert queue.counts()["answers"] == {"olga": 1}


def test_without_auth_names_are_enough_but_cross_site_posts_are_still_refused(
    make_config: Any,
) -> None:
    cfg = make_config()
    publish_requests(cfg, [make_request(cfg, "n1")])
    with served_app(cfg, token=None) as served:
        request = next_request(served, "nadia")
        assert request is not None and request["id"] == "n1"
        status, cookie = _login(served, "nadia", "")
        assert status == 303 and cookie is not None
        html = call("GET", served.url + "/", {"Cookie": cookie}).body.decode()
        assert 'name="token"' not in call("GET", served.url + "/login").body.decode()
        csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        cross = call(
            "POST",
            served.url + "/answer",
            {
                "Cookie": cookie,
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": "https://evil.example",
            },
            urlencode({"id": "n1", "choice": "0", "csrf": csrf}).encode(),
        )
        assert cross.status == 403
        plain = call(
            "POST",
            served.url + "/api/answer",
            {"Content-Type": "text/plain", "X-Reviewer": "nadia"},
            json.dumps({"id": "n1", "label": True}).encode(),
        )
        assert plain.status == 403
        reply = api(served, "POST", "/api/answer", {"id": "n1", "label": False}, "nadia", None)
        assert reply.status == 200, reply.body
    labels = json_values(human_labels(cfg, 1))
    assert [(x["id"], x["label"], x["reviewer"]) for x in labels] == [("n1", False, "nadia")]


def test_a_claim_left_alone_passes_to_another_reviewer_after_its_ttl(make_config: Any) -> None:
    cfg = make_config()
    publish_requests(cfg, [make_request(cfg, "c1")])
    with served_app(cfg, claim_ttl_s=1.0) as served:
        first = next_request(served, "alice")
        assert first is not None and first["id"] == "c1"
        assert next_request(served, "bob") is None  # alice holds it
        time.sleep(1.3)
        second = next_request(served, "bob")
        assert second is not None and second["id"] == "c1"
        late = api(served, "POST", "/api/answer", {"id": "c1", "label": True}, "alice")
        assert late.status == 409, late.body
        assert api(served, "POST", "/api/answer", {"id": "c1", "label": False}, "bob").status == 200
    labels = json_values(human_labels(cfg, 1))
    assert [(x["id"], x["label"], x["reviewer"]) for x in labels] == [("c1", False, "bob")]


def test_an_answer_the_pipeline_would_refuse_is_refused_with_its_reason(make_config: Any) -> None:
    """Issue 19: with validation.labels [1, 2, 3] the app took 2.5, the pipeline dead-lettered
    it and the request was marked answered. Now the app applies the pipeline's own check."""
    cfg = make_config(
        {
            "model": {"spec": "linear_model.LinearRegression"},
            "evaluation": {"metric": "MAE"},
            "validation": {"labels": [1, 2, 3]},
        }
    )
    publish_requests(cfg, [make_request(cfg, "g1", task="regression")])
    with served_app(cfg) as served:
        assert next_request(served, "script") is not None
        refused = api(served, "POST", "/api/answer", {"id": "g1", "label": 2.5})
        assert refused.status == 422, refused.body
        assert refused.json()["reason"] == "label_not_allowed"
        assert "not one of the configured labels" in refused.json()["error"]
        # Not marked answered: the same request takes an allowed answer.
        reply = api(served, "POST", "/api/answer", {"id": "g1", "label": 2})
        assert reply.status == 200, reply.body
    labels = json_values(human_labels(cfg, 1))
    assert [(x["id"], x["label"]) for x in labels] == [("g1", 2)]


def test_the_demo_keeps_the_review_page_open_for_people(backends: Any, tmp_path: Path) -> None:
    """Issue 19: `riverline demo --config configs/review.yaml --review-web PORT` prints the
    page's URL and token and waits for people; their answers are learned."""
    import signal

    from tests.integration.cli import cli_env, start
    from tests.integration.helpers import read_topic

    repo = Path(__file__).resolve().parents[2]
    port = free_port()
    args = ["demo", "--config", "configs/review.yaml", "--review-web", str(port)]
    args += ["--limit", "40", "--speed", "200", "--label-delay", "none"]
    args += ["--redis-url", backends.redis, "--out", str(tmp_path)]
    demo = start(args, cli_env(), cwd=repo)
    try:
        assert demo.stdout is not None and demo.stderr is not None
        said = demo.stdout.readline()
        found = re.fullmatch(rf"review page: (http://127\.0\.0\.1:{port}/)  token: (\S+)\n", said)
        assert found, said
        served, token = Served(found.group(1).rstrip("/")), found.group(2)
        bootstrap = name = None
        while bootstrap is None or name is None:
            line = demo.stderr.readline()
            assert line, "the demo said nothing about its broker and pipeline"
            if broker := re.match(r"embedded broker \(Tansu\) on (\S+)", line):
                bootstrap = broker.group(1)
            if pipeline := re.match(r"pipeline (\S+): replaying", line):
                name = pipeline.group(1)
        first: dict[str, Any] = {}

        def asked() -> bool:
            reply = api(served, "GET", "/api/next", reviewer="ana", token=token)
            first.update(reply.json()["request"] or {})
            return bool(first)

        wait_for(asked, 60, "the demo's first review request")
        assert first["id"] == "0" and first["classes"] == [False, True]
        answer = {"id": "0", "label": True}
        reply = api(served, "POST", "/api/answer", answer, reviewer="ana", token=token)
        assert reply.status == 200, reply.body

        def learned() -> bool:
            records = read_topic(bootstrap or "", f"{name}.predictions", timeout_s=1.0)
            return any(p["source"] == "human" for p in json_values(records))

        wait_for(learned, 60, "the person's answer served as a correcting prediction")
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 0, err
    assert "labels learned by source: 1 human" in out, out
