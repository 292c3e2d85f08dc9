"""`riverline review`: answer review requests, in a browser (--web) or in the terminal."""

from __future__ import annotations

import getpass
import os
from typing import Annotated

import typer

from pipeline.cli.app import app
from pipeline.cli.common import (
    DEFAULT_CONFIG,
    BootstrapOpt,
    ConfigOpt,
    LogOpt,
    NameOpt,
    RedisOpt,
    build_config,
    console,
    friendly_errors,
    kafka_bootstrap,
    print_error,
    setup_logging,
    stdout_console,
)
from pipeline.display import literal

TOKEN_ENV = "RIVERLINE_REVIEW_TOKEN"


@app.command()
def review(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: NameOpt = None,
    bootstrap: BootstrapOpt = None,
    redis_url: RedisOpt = None,
    web: Annotated[bool, typer.Option("--web", help="Serve the review page over HTTP.")] = False,
    host: Annotated[str, typer.Option(help="Address the page listens on (--web).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the page (--web).")] = 8765,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help=f"Serve without {TOKEN_ENV} (only on a loopback address)."),
    ] = False,
    secure_cookies: Annotated[
        bool, typer.Option(help="Mark the session cookie Secure (behind an HTTPS proxy).")
    ] = False,
    reviewer: Annotated[
        str | None, typer.Option(help="Your name on the answers (terminal; default: $USER).")
    ] = None,
    claim_ttl: Annotated[
        float, typer.Option(help="Seconds a request stays yours before others get it.")
    ] = 600.0,
    exit_when_empty: Annotated[
        bool, typer.Option(help="Terminal: stop once nothing is left to review.")
    ] = False,
    log_level: LogOpt = "WARNING",
) -> None:
    """Answer review requests: their answers are published as labels with source human."""
    from consumers.review import open_review_queue
    from consumers.review.auth import is_loopback, weak_token
    from consumers.signals import StopFlag

    setup_logging(log_level)
    token = os.environ.get(TOKEN_ENV) or None
    if web and token is None:
        if not no_auth:
            print_error(
                f"set {TOKEN_ENV} to a secret reviewers log in with, or pass "
                "--no-auth to serve without one on a loopback address"
            )
            raise typer.Exit(2)
        if not is_loopback(host):
            print_error(
                f"--no-auth serves on loopback only, not on {host}; set {TOKEN_ENV} to serve there"
            )
            raise typer.Exit(2)
    # Reachable from the network: a short token falls to guessing, throttle or not.
    problem = weak_token(token) if web and token is not None and not is_loopback(host) else None
    if problem:
        print_error(f"{TOKEN_ENV} {problem}: serving on {host} needs a strong token")
        raise typer.Exit(2)
    if claim_ttl <= 0:
        raise typer.BadParameter("must be above 0", param_hint="--claim-ttl")
    with friendly_errors():
        cfg = build_config(config, name, bootstrap, redis_url)
        with (
            kafka_bootstrap(cfg, embedded_ok=False) as servers,
            open_review_queue(cfg, servers, claim_ttl_s=claim_ttl) as queue,
        ):
            if web:
                import uvicorn

                from consumers.review.web import create_app

                application = create_app(queue, token, secure_cookies=secure_cookies)
                console.print(
                    f"review page for pipeline {cfg.name} on http://{host}:{port}/"
                    + (" (no authentication)" if token is None else ""),
                    highlight=False,
                )
                # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again
                # for the handler it found: let that be a flag, so the queue closes cleanly.
                StopFlag().install()
                uvicorn.run(application, host=host, port=port, log_level=log_level.lower())
            else:
                from consumers.review.terminal import review_in_terminal

                who = reviewer or os.environ.get("USER") or getpass.getuser()
                count = review_in_terminal(
                    queue, who, stdout_console(), exit_when_empty=exit_when_empty
                )
                console.print(literal(f"{who}: {count} answered this session"), highlight=False)
