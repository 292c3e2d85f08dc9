"""The reviewer's HTML: one request at a time, opinions side by side, one button per class.

Text from a request (ids, feature names and values, classes) and names is shown, never read:
HTML-escaped, its control and bidi characters made visible (:func:`pipeline.display.shown`),
and isolated in ``<bdi>`` so right-to-left text cannot reorder what surrounds it. Messages are
chosen by code from the fixed ones below, never taken from the query string. The page's only
style and script are allowed by hash in its Content-Security-Policy.
"""

from __future__ import annotations

import base64
import hashlib
import html
import time
from datetime import UTC, datetime
from typing import Any

from consumers.review.queue import Standing
from consumers.review.transport import Delivered
from pipeline.display import shown
from pipeline.schemas import FeatureValue

STYLE = """
:root { --ink:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f5f6f8; --card:#fff;
  --accent:#2f6fde; --accent-ink:#fff; --warn:#b54708; --ok:#067647; }
* { box-sizing:border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
  color:var(--ink); background:var(--bg); }
header { display:flex; align-items:center; gap:1.5rem; padding:.7rem 1.5rem; background:#1d2330;
  color:#fff; }
header .brand { font-weight:650; letter-spacing:.01em; }
header .brand small { color:#aab3c5; font-weight:400; margin-left:.4rem; }
header .stats { margin-left:auto; display:flex; gap:1.2rem; color:#d0d5dd; }
header .stats b { color:#fff; font-variant-numeric:tabular-nums; }
header form { margin:0; }
header button { background:none; border:1px solid #475467; color:#d0d5dd; border-radius:6px;
  padding:.2rem .6rem; cursor:pointer; }
main { max-width:980px; margin:1.5rem auto; padding:0 1rem; }
.card { background:var(--card); border:1px solid var(--line); border-radius:12px;
  padding:1.3rem 1.5rem; box-shadow:0 1px 2px rgba(16,24,40,.05); }
.meta { display:flex; flex-wrap:wrap; gap:.4rem 1.4rem; color:var(--muted); font-size:.9rem;
  margin-bottom:1rem; }
.meta code { color:var(--ink); font-size:.95rem; }
.meta .deadline { color:var(--warn); }
.grid { display:grid; grid-template-columns:1.3fr 1fr; gap:1.5rem; }
h2 { font-size:.8rem; text-transform:uppercase; letter-spacing:.06em; color:var(--muted);
  margin:0 0 .5rem; }
table { border-collapse:collapse; width:100%; margin-bottom:1rem; }
td { padding:.32rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
td.name { color:var(--muted); width:40%; }
td.value { font-variant-numeric:tabular-nums; word-break:break-word; }
.opinion { border:1px solid var(--line); border-radius:10px; padding:.7rem .9rem;
  margin-bottom:.8rem; }
.opinion .who { font-size:.85rem; color:var(--muted); }
.opinion .says { font-size:1.25rem; font-weight:600; margin:.15rem 0 .35rem; }
.bar { height:6px; background:#eef1f5; border-radius:3px; overflow:hidden; }
.bar span { display:block; height:100%; background:var(--accent); }
.conf { font-size:.85rem; color:var(--muted); margin-top:.25rem; }
.proba { font-size:.82rem; color:var(--muted); margin-top:.3rem; }
.answers { margin-top:1.2rem; padding-top:1.1rem; border-top:1px solid var(--line);
  display:flex; flex-wrap:wrap; gap:.6rem; align-items:center; }
.answers form { margin:0; display:flex; flex-wrap:wrap; gap:.6rem; align-items:center; }
button.choice, button.skip, button.primary { font:inherit; border-radius:8px; cursor:pointer;
  padding:.55rem 1rem; border:1px solid var(--accent); background:var(--accent);
  color:var(--accent-ink); font-weight:600; }
button.choice:hover, button.primary:hover { filter:brightness(1.08); }
button.skip { background:#fff; color:var(--ink); border-color:#d0d5dd; font-weight:500; }
kbd { font:600 .75rem ui-monospace,monospace; border-radius:4px; padding:.05rem .35rem;
  margin-right:.45rem; background:rgba(255,255,255,.22); }
button.skip kbd { background:#eef1f5; }
input[type=number], input[type=text], input[type=password] { font:inherit; padding:.5rem .7rem;
  border:1px solid #d0d5dd; border-radius:8px; }
.hint { color:var(--muted); font-size:.85rem; margin-left:auto; }
.notice { margin-bottom:1rem; padding:.6rem .9rem; border-radius:8px; background:#ecfdf3;
  color:var(--ok); border:1px solid #abefc6; }
.notice.error { background:#fef3f2; color:#b42318; border-color:#fecdca; }
.empty { text-align:center; padding:3rem 1rem; color:var(--muted); }
.empty b { display:block; color:var(--ink); font-size:1.2rem; margin-bottom:.3rem; }
.login { max-width:380px; margin:4rem auto; }
.login h1 { font-size:1.35rem; margin:0; }
.login .sub { color:var(--muted); margin:.2rem 0 1rem; }
.login label { display:block; margin:.8rem 0 .3rem; color:var(--muted); font-size:.9rem; }
.login input { width:100%; }
.login button { margin-top:1.2rem; width:100%; }
@media (max-width:760px) { .grid { grid-template-columns:1fr; } }
"""

SHORTCUTS = """
document.addEventListener("keydown", function (e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  var t = e.target.tagName;
  if (t === "INPUT" || t === "TEXTAREA") {
    if (e.key === "Escape") e.target.blur();  // then s skips
    return;
  }
  var b = document.querySelector('[data-key="' + e.key.toLowerCase() + '"]');
  if (b) { e.preventDefault(); b.click(); }
});
"""


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# Nothing but the page's own style and script, no frames, forms to this server only. Inline
# style attributes (a confidence bar's width) are allowed: they can load nothing (default-src).
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_sha256(SHORTCUTS)}; style-src-elem {_sha256(STYLE)}; "
    "style-src-attr 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)

# The only messages the page says, by the code in ``?notice=`` or ``?error=``.
NOTICES = {"saved": "Saved.", "skipped": "Skipped."}
ERRORS = {
    "no_class": "No such class.",
    "not_an_answer": "That is not an answer this request takes.",
    "taken": "Already answered or claimed by another reviewer.",
    "gone": "No such request waits for an answer any more (answered, unknown or expired).",
    "broker": "The broker did not take the answer; try again.",
}


def esc(value: Any) -> str:
    """For attribute values that must stay exact (an id sent back with the answer)."""
    return html.escape(str(value), quote=True)


def text(value: Any) -> str:
    """Text from a request or a person, as shown: escaped, made visible, isolated."""
    return f"<bdi>{html.escape(shown(value), quote=True)}</bdi>"


def show(value: FeatureValue | Any) -> str:
    if value is None:
        return '<span style="color:#98a2b3">missing</span>'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return esc(f"{value:.6g}")
    return text(value)


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(seconds: float) -> str:
    """
    >>> ago(5), ago(125), ago(7300)
    ('just now', '2 min ago', '2 h ago')
    """
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    return f"{int(seconds // 3600)} h ago"


def document(title: str, body: str, refresh_s: int | None = None) -> str:
    # Back to "/" on refresh: a notice in the query is said once, not every few seconds.
    refresh = f'<meta http-equiv="refresh" content="{refresh_s};url=/">' if refresh_s else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>{esc(shown(title))}</title><style>{STYLE}</style></head>"
        f"<body>{body}<script>{SHORTCUTS}</script></body></html>"
    )


def header(pipeline: str, reviewer: str, standing: Standing, csrf: str) -> str:
    waiting = f"{standing.waiting}" + ("" if standing.caught_up else "+")
    return (
        f'<header><div class="brand">riverline review<small>{text(pipeline)}</small></div>'
        '<div class="stats">'
        f'<span>queue <b id="queue-length">{esc(waiting)}</b></span>'
        f'<span>{text(reviewer)}: <b id="my-count">{standing.answered}</b> answered</span>'
        "</div>"
        '<form method="post" action="/logout">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        '<button type="submit">log out</button></form></header>'
    )


def _table(values: dict[str, FeatureValue]) -> str:
    rows = "".join(
        f'<tr><td class="name">{text(k)}</td><td class="value">{show(v)}</td></tr>'
        for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def _confidence(confidence: float | None) -> str:
    if confidence is None:
        return '<div class="conf">no confidence given</div>'
    share = max(0.0, min(1.0, confidence))
    return (
        f'<div class="bar"><span style="width:{share * 100:.1f}%"></span></div>'
        f'<div class="conf">{share * 100:.1f}% confident</div>'
    )


def _why(explanation: list[dict[str, Any]] | None) -> str:
    """The model's top feature contributions, as text: each feature, its value, and how much
    it moved the answer (up or down)."""
    terms = [e for e in explanation or [] if "feature" in e]
    if not terms:
        return ""
    items = "".join(
        f"<li>{esc(e['feature'])} = {esc(e.get('value'))}: {float(e['contribution']):+.3f}</li>"
        for e in terms
    )
    return f'<div class="proba" id="model-why">why: <ul>{items}</ul></div>'


def _opinions(delivered: Delivered) -> str:
    request = delivered.request
    parts = []
    model = request.model
    if model is None or model.prediction is None:
        version = f" v{model.model_version}" if model is not None else ""
        parts.append(
            f'<div class="opinion"><div class="who">Model{version}</div>'
            '<div class="says" style="color:#98a2b3">no opinion yet</div></div>'
        )
    else:
        proba = ""
        if model.proba:
            ranked = sorted(model.proba.items(), key=lambda kv: -kv[1])[:5]
            proba = (
                '<div class="proba">'
                + " · ".join(f"{text(k)} {v:.2f}" for k, v in ranked)
                + "</div>"
            )
        parts.append(
            f'<div class="opinion" id="model-opinion"><div class="who">Model '
            f'v{model.model_version}</div><div class="says">{show(model.prediction)}</div>'
            f"{_confidence(model.confidence)}{proba}{_why(model.explanation)}</div>"
        )
    rules = request.rules
    if rules is None or rules.prediction is None:
        parts.append(
            '<div class="opinion"><div class="who">Rules</div>'
            '<div class="says" style="color:#98a2b3">no answer</div></div>'
        )
    else:
        parts.append(
            f'<div class="opinion" id="rules-opinion"><div class="who">Rules '
            f'({text(rules.source)})</div><div class="says">{show(rules.prediction)}</div>'
            f"{_confidence(rules.confidence)}"
            # The rule as the config says it: text, isolated like any other shown value.
            + (f'<div class="proba" id="rule">rule: {text(rules.rule)}</div>' if rules.rule else "")
            + "</div>"
        )
    return "".join(parts)


def _neighbours(delivered: Delivered) -> str:
    """The most similar recently labelled events: each one's label, how far it is (0: the same
    features, 1: nothing in common) and its values where it differs most; all text escaped
    and isolated like the request's own."""
    found = delivered.request.neighbours
    if not found:
        return ""
    rows = "".join(
        f'<tr><td class="value">{show(n.label)}</td><td class="name">{esc(f"{n.distance:.3f}")}'
        "</td><td>"
        + (", ".join(f"{text(k)} = {show(v)}" for k, v in n.differs.items()) or "the same")
        + f'</td><td class="name">{text(n.id)}</td></tr>'
        for n in found
    )
    return (
        '<h2>Similar labelled events</h2><table id="neighbours">'
        '<tr><td class="name">label</td><td class="name">distance</td>'
        '<td class="name">where it differs</td><td class="name">event</td></tr>'
        f"{rows}</table>"
    )


def _answers(
    delivered: Delivered,
    csrf: str,
    allowed: tuple[Any, ...] | None = None,
    new_classes: bool = False,
) -> str:
    """The answer controls: a button per class (and a field for another class where
    ``review.new_classes`` allows it), or a number field bounded by the allowed labels."""
    request = delivered.request
    hidden = (
        f'<input type="hidden" name="id" value="{esc(request.id)}">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
    )
    numbers = [
        float(v) for v in allowed or () if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    if request.task == "regression":
        # The range the pipeline allows, so the browser says so before the pipeline must.
        bounds = f' min="{min(numbers):g}" max="{max(numbers):g}"' if numbers else ""
        answer = (
            f'<form method="post" action="/answer">{hidden}'
            f'<input type="number" step="any" name="value" required autofocus{bounds} '
            'placeholder="value" aria-label="value">'
            '<button class="primary" type="submit">Answer</button></form>'
        )
        if allowed:
            answer += (
                '<span class="hint" id="allowed">allowed: '
                + esc(", ".join(f"{v:g}" for v in numbers))
                + "</span>"
            )
    else:
        buttons = "".join(
            f'<button class="choice" type="submit" name="choice" value="{i}" '
            f'data-key="{i + 1}">'
            + (f"<kbd>{i + 1}</kbd>" if i < 9 else "")
            + f"{show(c)}</button>"
            for i, c in enumerate(request.classes)
        )
        answer = f'<form method="post" action="/answer">{hidden}{buttons}</form>'
        if new_classes:
            # Its own form: Enter in the field must send the text, not the first class button.
            answer += (
                f'<form method="post" action="/answer">{hidden}'
                '<input type="text" name="value" maxlength="200" required '
                'placeholder="another class" aria-label="another class">'
                '<button class="skip" type="submit">Answer</button></form>'
            )
    skip = (
        f'<form method="post" action="/skip">{hidden}'
        '<button class="skip" type="submit" data-key="s"><kbd>s</kbd>Skip</button></form>'
    )
    shown = min(9, len(request.classes))
    keys = ("1 answers" if shown == 1 else f"1-{shown} answer") + " · s skip"
    if request.task == "regression":
        keys = "Enter answers · Esc then s skips"
    elif shown == 0:
        keys = "s skip"
    return f'<div class="answers">{answer}{skip}<span class="hint">{keys}</span></div>'


def review_page(
    pipeline: str,
    reviewer: str,
    standing: Standing,
    csrf: str,
    delivered: Delivered | None,
    notice: str | None = None,
    error: str | None = None,
    now: float | None = None,
    allowed: tuple[Any, ...] | None = None,
    new_classes: bool = False,
    detail: str | None = None,
) -> str:
    """The page for one request; ``allowed`` (validation.labels) and ``new_classes``
    (review.new_classes) are the pipeline's rules for an answer.

    ``notice`` and ``error`` are codes (keys of NOTICES, ERRORS); any other says nothing.
    ``detail`` is the server's own words after an error code (the pipeline's refusal of an
    answer), never from the query string: shown as escaped, isolated text.
    """
    now = time.time() if now is None else now
    top = header(pipeline, reviewer, standing, csrf)
    flash = ""
    if error in ERRORS:
        said = f" {text(detail)}" if detail else ""
        flash = f'<div class="notice error">{esc(ERRORS[error])}{said}</div>'
    elif notice in NOTICES:
        flash = f'<div class="notice">{esc(NOTICES[notice])}</div>'
    if delivered is None:
        body = (
            f'{top}<main>{flash}<div class="card empty"><b>Nothing to review right now</b>'
            "This page looks again every few seconds.</div></main>"
        )
        return document(f"riverline review · {pipeline}", body, refresh_s=3)
    request = delivered.request
    meta = [
        # dir="auto" isolates as <bdi> does, and keeps the id the element's only text.
        f'<span>request <code dir="auto" id="request-id">{esc(shown(request.id))}</code></span>',
        f"<span>event time {esc(when(request.ts))}</span>",
        f"<span>requested {esc(ago(now - delivered.requested_at))}</span>",
        f"<span>mode {esc(request.mode)}</span>",
    ]
    expires_at = delivered.expires_at
    if expires_at is not None:
        left = max(0, int(expires_at - now))
        meta.append(f'<span class="deadline">deadline in {left // 60}m {left % 60:02d}s</span>')
    attributes = ""
    if request.attributes:
        attributes = f"<h2>Attributes</h2>{_table(request.attributes)}"
    body = (
        f'{top}<main>{flash}<div class="card"><div class="meta">{"".join(meta)}</div>'
        # The neighbours under the features they are compared by: the left column has the
        # room, and the answer buttons stay on a laptop's first screen.
        f'<div class="grid"><div><h2>Features</h2>{_table(request.features)}{attributes}'
        f"{_neighbours(delivered)}</div>"
        f"<div><h2>What they say</h2>{_opinions(delivered)}</div></div>"
        f"{_answers(delivered, csrf, allowed, new_classes)}</div></main>"
    )
    return document(f"riverline review · {pipeline}", body)


def login_page(pipeline: str, needs_token: bool, error: str | None = None, name: str = "") -> str:
    flash = f'<div class="notice error">{esc(error)}</div>' if error else ""
    token = (
        '<label for="token">Access token</label>'
        '<input id="token" type="password" name="token" required autocomplete="current-password">'
        if needs_token
        else ""
    )
    body = (
        '<main class="login"><div class="card"><h1>riverline review</h1>'
        f'<p class="sub">pipeline <code>{text(pipeline)}</code></p>{flash}'
        '<form method="post" action="/login">'
        '<label for="reviewer">Your name</label>'
        f'<input id="reviewer" type="text" name="reviewer" required maxlength="200" '
        f'value="{esc(name)}" autofocus>'
        f'{token}<button class="primary" type="submit">Start reviewing</button></form></div></main>'
    )
    return document("riverline review · log in", body)
