"""The gate of the private-API shortcuts: checked versions only, one warning when refused."""

from __future__ import annotations

import logging

import pytest

from pipeline import shortcuts


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shortcuts, "_reported", set())
    monkeypatch.setattr(shortcuts, "public_only", set())


def checked(name: str) -> str:
    return sorted(shortcuts.CHECKED[name][1])[0]


@pytest.mark.parametrize("name", sorted(shortcuts.CHECKED))
def test_a_shortcut_runs_only_on_a_version_it_was_checked_against(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.shortcuts")
    assert shortcuts.allowed(name, version=lambda library: checked(name))
    assert not caplog.records
    for _ in range(3):
        assert not shortcuts.allowed(name, version=lambda library: "99.0.0")
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"shortcut {name} is off, the public API runs instead")
    assert "99.0.0 is not a version it was checked against" in said


def test_changed_internals_fall_back_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.shortcuts")
    name = sorted(shortcuts.CHECKED)[0]

    def missing() -> bool:
        raise AttributeError("'Fetcher' object has no attribute '_fetcher'")

    on_version = {"version": lambda library: checked(name)}
    assert not shortcuts.allowed(name, lambda: False, **on_version)
    assert not shortcuts.allowed(name, missing, **on_version)
    (said,) = [r.getMessage() for r in caplog.records]
    assert "internals are not what it was checked against" in said
    assert shortcuts.allowed(name, lambda: True, **on_version)


def test_forced_public_and_unknown_shortcuts_do_not_run() -> None:
    name = sorted(shortcuts.CHECKED)[0]
    shortcuts.public_only.add(name)
    assert not shortcuts.allowed(name, version=lambda library: checked(name))
    assert not shortcuts.allowed("river.adwin")  # returned to the public API (issue 22)
