"""``riverline review``: the review queue in a terminal, one request at a time.

Type a class's number (or its name), a number for a regression, ``s`` to skip, ``q`` to quit.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.panel import Panel
from rich.prompt import Prompt
from rich.table import Table
from rich.text import Text

from consumers.review.queue import ReviewError, ReviewQueue
from consumers.review.transport import Delivered
from pipeline.display import literal
from pipeline.schemas import proba_key


def _value(value: object) -> str:
    if value is None:
        return "missing"
    if isinstance(value, float):
        return f"{value:.6g}"
    return proba_key(value)


def _confidence(confidence: float | None) -> str:
    return "" if confidence is None else f" ({confidence * 100:.1f}% confident)"


def render(delivered: Delivered) -> Panel:
    """The request as a table; its text goes in as :func:`literal` (never read as markup)."""
    request = delivered.request
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("name", style="dim")
    table.add_column("value")
    for name, value in request.features.items():
        table.add_row(literal(name), literal(_value(value)))
    for name, value in request.attributes.items():
        table.add_row(literal(f"{name} (attribute)"), literal(_value(value)))
    model = request.model
    if model is None or model.prediction is None:
        table.add_row("[bold]model[/bold]", "no opinion yet")
    else:
        table.add_row(
            f"[bold]model v{model.model_version}[/bold]",
            literal(_value(model.prediction) + _confidence(model.confidence)),
        )
        for term in model.explanation or []:
            if "feature" in term:  # why: each top feature, its value, how far it moved the answer
                table.add_row(
                    literal(f"  why: {term['feature']}", style="dim"),
                    literal(f"= {_value(term.get('value'))}: {float(term['contribution']):+.3f}"),
                )
    rules = request.rules
    if rules is None or rules.prediction is None:
        table.add_row("[bold]rules[/bold]", "no answer")
    else:
        table.add_row(
            literal(f"rules ({rules.source})", style="bold"),
            literal(_value(rules.prediction) + _confidence(rules.confidence)),
        )
        if rules.rule:
            table.add_row(literal("  rule", style="dim"), literal(rules.rule))
    for n in request.neighbours:
        differs = ", ".join(f"{k} = {_value(v)}" for k, v in n.differs.items()) or "the same"
        table.add_row(
            literal(f"similar: {_value(n.label)}", style="bold"),
            literal(f"distance {n.distance:.3f} · {n.id} · differs: {differs}"),
        )
    return Panel(table, title=literal(f"request {request.id}"), title_align="left", expand=False)


def choices_line(delivered: Delivered) -> Text:
    request = delivered.request
    if request.task == "regression":
        return Text("a number, s skip, q quit")
    options = "  ".join(f"{i + 1}={_value(c)}" for i, c in enumerate(request.classes))
    return literal(f"{options}  s=skip  q=quit")


def review_in_terminal(
    queue: ReviewQueue,
    reviewer: str,
    console: Console,
    exit_when_empty: bool = False,
    poll_s: float = 0.5,
) -> int:
    """Serve requests until ``q``, end of input, or (``exit_when_empty``) an empty queue.

    Returns how many answers were published.
    """
    answered = 0
    waiting_said = False
    while True:
        # Read first: caught up before taking what arrived means nothing else is on the topic.
        caught_up = queue.source.caught_up
        delivered = queue.next(reviewer)
        if delivered is None:
            if exit_when_empty and caught_up:
                console.print("the queue is empty")
                return answered
            if not waiting_said and caught_up:
                console.print("waiting for review requests... (Ctrl-C to stop)")
                waiting_said = True
            try:
                time.sleep(poll_s)
            except KeyboardInterrupt:
                return answered
            continue
        waiting_said = False
        standing = queue.standing(reviewer)
        console.print(render(delivered))
        console.print(
            literal(f"queue {standing.waiting} · {reviewer}: {standing.answered} answered"),
            style="dim",
        )
        request = delivered.request
        while True:
            try:
                text = Prompt.ask(choices_line(delivered), console=console).strip()
            except (EOFError, KeyboardInterrupt):
                return answered
            if text.lower() == "q":
                return answered
            try:
                if text.lower() == "s":
                    queue.skip(request.id, reviewer)
                    console.print(literal(f"skipped {request.id}"))
                    break
                value: object = text
                if request.task == "classification" and text.isdigit():
                    index = int(text) - 1
                    if 0 <= index < len(request.classes):
                        value = request.classes[index]
                label = queue.answer(request.id, reviewer, value)
            except ReviewError as e:
                console.print(literal(e, style="red"))
                if e.status in (422, 503):
                    continue  # not an answer, or the broker did not take it: ask again
                break  # answered elsewhere, expired: move on
            answered += 1
            console.print(
                Text.assemble(("saved", "green"), literal(f" {request.id} = {_value(label.label)}"))
            )
            break
