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
