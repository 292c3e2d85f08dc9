"""The review page says what it shows as text: nothing from a request or a name becomes HTML."""

from __future__ import annotations

from consumers.review.page import login_page, review_page
from consumers.review.queue import Standing
from consumers.review.transport import Delivered
from pipeline.schemas import ModelOpinion, ReviewRequest, RulesOpinion

EVIL = '<script>alert("x")</script>'


def _request(**changes: object) -> ReviewRequest:
    base = ReviewRequest(
        id=EVIL,
        pipeline="p",
        ts=0.0,
        features={EVIL: EVIL, "n": 1.5},
        attributes={"a": EVIL},
        task="classification",
        classes=[EVIL, "ok"],
        model=ModelOpinion(prediction=EVIL, proba={EVIL: 0.9, "ok": 0.1}, model_version=3),
        rules=RulesOpinion(prediction="ok", source="heuristic", confidence=None),
        mode="defer",
        requested_at=0.0,
        deadline=100.0,
    )
    return base.model_copy(update=changes)


def test_request_fields_names_and_messages_are_escaped() -> None:
    page = review_page(
        "pipe" + EVIL,
        EVIL,
        Standing(waiting=2, answered=1, skipped=0, caught_up=True),
        'csrf"><b>',
        Delivered(_request(), 0, 0),
        error=EVIL,
        now=40.0,
    )
    assert "<script>alert" not in page
    assert page.count("&lt;script&gt;") >= 8
    assert 'value="csrf&quot;&gt;&lt;b&gt;"' in page
    assert "deadline in 1m 00s" in page
    assert 'data-key="1"' in page and 'data-key="2"' in page and 'data-key="s"' in page
    assert "no confidence given" in page  # the rules gave none


def test_a_regression_request_asks_for_a_number_and_the_login_asks_for_the_token() -> None:
    request = _request(task="regression", classes=[], id="r")
    page = review_page("p", "ana", Standing(1, 0, 0, False), "t", Delivered(request, 0, 0))
    assert 'type="number"' in page and 'name="choice"' not in page
    assert 'id="queue-length">1+<' in page  # not caught up yet: at least one
    assert 'name="token"' in login_page("p", needs_token=True)
    assert 'name="token"' not in login_page("p", needs_token=False)


def test_answer_controls_follow_the_pipelines_rules() -> None:
    """Issue 19: a button per class with a hint that matches them, a field for another class
    where review.new_classes allows it, and a regressor's number field within the allowed range."""
    standing = Standing(waiting=1, answered=0, skipped=0, caught_up=True)
    two = _request(id="r", classes=[False, True])
    page = review_page("p", "ann", standing, "c", Delivered(two, 0, 0), now=0.0)
    assert page.count('class="choice"') == 2 and "1-2 answer" in page
    assert "another class" not in page
    page = review_page("p", "ann", standing, "c", Delivered(two, 0, 0), now=0.0, new_classes=True)
    assert 'placeholder="another class"' in page
    number = _request(id="g", task="regression", classes=[])
    page = review_page(
        "p", "ann", standing, "c", Delivered(number, 0, 0), now=0.0, allowed=(1, 2, 3)
    )
    assert 'type="number"' in page and 'min="1" max="3"' in page and "allowed: 1, 2, 3" in page


def test_the_page_shows_why_escaped() -> None:
    """Issue 19, point 4: the model's top contributions and the rule that fired, as text."""
    request = _request(
        model=ModelOpinion(
            prediction="ok",
            model_version=3,
            explanation=[{"feature": EVIL, "value": 1.0, "contribution": 0.5}],
        ),
        rules=RulesOpinion(prediction="ok", source="heuristic", rule=f"{EVIL} > 1 -> 'ok'"),
    )
    standing = Standing(waiting=1, answered=0, skipped=0, caught_up=True)
    page = review_page("p", "ann", standing, "c", Delivered(request, 0, 0), now=0.0)
    assert 'id="model-why"' in page and "+0.500" in page and 'id="rule"' in page
    assert EVIL not in page


def test_a_refusal_shows_the_pipelines_reason_only_from_the_server() -> None:
    """Issue 19: the pipeline's reason beside the fixed message, escaped; an error that is
    not a known code (as from a crafted URL) says nothing."""
    standing = Standing(waiting=1, answered=0, skipped=0, caught_up=True)
    delivered = Delivered(_request(id="r"), 0, 0)
    page = review_page(
        "p", "ann", standing, "c", delivered, error="not_an_answer", detail=f"no ({EVIL})"
    )
    assert "That is not an answer this request takes." in page and EVIL not in page
    assert "no (&lt;script&gt;" in page
    crafted = review_page("p", "ann", standing, "c", delivered, error="label_not_allowed (1, 2)")
    assert 'class="notice error"' not in crafted and "label_not_allowed" not in crafted


def test_the_policy_allows_the_pages_own_style_and_script_by_hash() -> None:
    """A change to either without its hash would be blocked silently in a browser."""
    import base64
    import hashlib

    from consumers.review.page import CONTENT_SECURITY_POLICY, SHORTCUTS, STYLE

    for source in (STYLE, SHORTCUTS):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in CONTENT_SECURITY_POLICY


def test_the_models_explanation_is_shown_beside_its_answer_as_text() -> None:
    explanation = [
        {"feature": EVIL, "value": EVIL, "contribution": 0.25},
        {"feature": "n", "value": 1.5, "contribution": -0.125},
        {"method": "sampled", "target": "ok", "base": 0.5, "prediction": 0.625},
    ]
    model = ModelOpinion(
        prediction="ok", proba={"ok": 0.6}, model_version=3, explanation=explanation
    )
    page = review_page(
        "p", "ana", Standing(1, 0, 0, True), "t", Delivered(_request(model=model), 0, 0)
    )
    assert 'id="model-why"' in page and "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; = " in page and "+0.250" in page
    assert "n = 1.5: -0.125" in page
    # Without one, nothing is added.
    plain = review_page("p", "ana", Standing(1, 0, 0, True), "t", Delivered(_request(), 0, 0))
    assert 'id="model-why"' not in plain


def test_the_page_shows_why_the_rule_and_the_neighbours_as_text() -> None:
    """Issue 19 point 4: the model's explanation, the fallback rule that fired and the nearest
    labelled events, every text escaped and isolated (a bidi-control id stays inert)."""
    from pipeline.schemas import Neighbour

    request = _request(
        model=ModelOpinion(
            prediction="ok",
            proba={"ok": 0.9},
            model_version=3,
            explanation=[{"feature": EVIL, "value": 1.5, "contribution": 0.25}],
        ),
        rules=RulesOpinion(prediction="ok", source="heuristic", rule=f"{EVIL} > 3"),
        neighbours=[
            Neighbour(id="n\u202e1", label=EVIL, distance=0.125, differs={EVIL: EVIL}),
            Neighbour(id="n2", label="ok", distance=0.5),
        ],
    )
    page = review_page("p", "ann", Standing(1, 0, 0, True), "c", Delivered(request, 0, 0))
    assert "<script>alert" not in page
    assert 'id="model-why"' in page and "+0.250" in page
    assert 'id="rule">rule: <bdi>&lt;script&gt;' in page
    assert '<table id="neighbours">' in page and "Similar labelled events" in page
    assert page.index(">0.125<") < page.index(">0.500<")  # nearest first
    assert "the same" in page  # n2 differs nowhere shown
    assert "\u202e" not in page  # made visible, not applied (pipeline.display.shown)


def test_the_terminal_shows_why_the_rule_and_the_neighbours() -> None:
    from rich.console import Console

    from consumers.review.terminal import render
    from pipeline.schemas import Neighbour

    request = _request(
        model=ModelOpinion(
            prediction="ok",
            proba={"ok": 0.9},
            confidence=0.9,
            model_version=3,
            explanation=[
                {"feature": "n", "value": 1.5, "contribution": -0.25},
                {"method": "sampled", "target": "ok", "base": 0.5, "prediction": 0.9},
            ],
        ),
        rules=RulesOpinion(prediction="ok", source="heuristic", rule="[bold]n > 1[/bold]"),
        neighbours=[Neighbour(id="n1", label="spam", distance=0.125, differs={"n": 3.0})],
    )
    console = Console(width=200, record=True)
    console.print(render(Delivered(request, 0, 0)))
    out = console.export_text()
    assert "why: n" in out and "= 1.5: -0.250" in out
    assert "rule" in out and "[bold]n > 1[/bold]" in out  # printed as text, not markup
    assert "similar: spam" in out and "distance 0.125 · n1 · differs: n = 3" in out
