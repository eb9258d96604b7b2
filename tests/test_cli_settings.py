"""How `liverec serve` reads its settings: flags over variables over defaults, `none`/`off`
for every optional limit, boolean switches, aliases, grouped help.

`liverec serve --check` prints the effective settings as JSON and exits: these tests
run it as a subprocess, so they see exactly what a server would start with.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, get_type_hints

import pytest

from liverec.cli import build_parser
from liverec.config import BOUNDS, Bound, Settings, base_type, is_optional, setting_groups
from liverec.flags import flag_name, given_settings

from .test_cli_errors import run_cli

HINTS = get_type_hints(Settings)
OPTIONAL = [f for f in fields(Settings) if is_optional(HINTS[f.name])]
# A value other than the default (and other than None) for every optional setting.
OTHER_VALUE = {
    "model_path": ".",
    "ab_model_path": ".",
    "web_dir": ".",
    "jwt_secret": "x" * 32,
    "admin_token": "t" * 32,
    "vsknn_data": __file__,  # any existing file: --check only looks for it
    "demo_model": ".",
}


def checked(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = run_cli("serve", "--check", "--store", "memory://", *args, env=env)
    assert out.returncode == 0, out.stderr
    shown: dict[str, Any] = json.loads(out.stdout)
    return shown


def some_value(name: str) -> str:
    if name in OTHER_VALUE:
        return OTHER_VALUE[name]
    kind = base_type(HINTS[name])
    return "7" if kind in (int, float) else "x"


def test_the_optional_settings_are_the_ones_this_test_knows() -> None:
    assert len(OPTIONAL) >= 10
    for f in OPTIONAL:
        kind = base_type(HINTS[f.name])
        assert kind in (int, float) or f.name in OTHER_VALUE, f"add {f.name} to OTHER_VALUE"


def test_none_and_off_on_flags_win_over_the_environment() -> None:
    """`--learn-interval-s none` is None even when the variable (or the default) says 600."""
    env = {"LIVEREC_" + f.name.upper(): some_value(f.name) for f in OPTIONAL}
    args: list[str] = []
    for n, f in enumerate(OPTIONAL):
        args += [flag_name(f.name), "none" if n % 2 else "off"]
    shown = checked(*args, env=env)
    assert {f.name: shown[f.name] for f in OPTIONAL} == {f.name: None for f in OPTIONAL}


def test_none_and_off_in_variables() -> None:
    env = {"LIVEREC_" + f.name.upper(): ("None", "OFF", "")[n % 3] for n, f in enumerate(OPTIONAL)}
    shown = checked(env=env)
    assert {f.name: shown[f.name] for f in OPTIONAL} == {f.name: None for f in OPTIONAL}


def test_values_of_optional_settings_on_flags_and_variables() -> None:
    half = len(OPTIONAL) // 2
    env = {"LIVEREC_" + f.name.upper(): some_value(f.name) for f in OPTIONAL[:half]}
    args = [a for f in OPTIONAL[half:] for a in (flag_name(f.name), some_value(f.name))]
    shown = checked(*args, env=env)
    for f in OPTIONAL:
        assert shown[f.name] is not None, f.name
        assert shown[f.name] != f.default, f.name


def test_learn_takes_none_on_its_flags_too() -> None:
    argv = ["learn", "--learn-interval-s", "none", "--learn-min-events", "off"]
    args = build_parser().parse_args(argv)
    flags = given_settings(args)
    assert flags == {"learn_interval_s": None, "learn_min_events": None}
    env = {"LIVEREC_LEARN_INTERVAL_S": "5", "LIVEREC_LEARN_MIN_EVENTS": "9"}
    settings = Settings.from_sources(env, flags)
    assert settings.learn_interval_s is None and settings.learn_min_events is None


@pytest.mark.parametrize(
    ("args", "env", "demo"),
    [
        (["--demo"], {}, True),
        (["--demo", "--port", "9"], {}, True),
        (["--demo", "off"], {"LIVEREC_DEMO": "on"}, False),
        (["--no-demo"], {"LIVEREC_DEMO": "yes"}, False),
        ([], {"LIVEREC_DEMO": "TRUE"}, True),
        ([], {"LIVEREC_DEMO": "0"}, False),
        ([], {}, False),
    ],
)
def test_boolean_switches(args: list[str], env: dict[str, str], demo: bool) -> None:
    assert checked(*args, env=env)["demo"] is demo


def test_aliases_and_secrets_masked() -> None:
    out = run_cli(
        "serve",
        "--check",
        "--store",
        "redis://:hunter2@db:6379/0",
        "--model",
        ".",
        env={"LIVEREC_ADMIN_TOKEN": "a" * 32},
    )
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["model_path"] == "." and shown["store_url"].startswith("redis://")
    assert "hunter2" not in out.stdout and "a" * 32 not in out.stdout
    assert shown["admin_token"] == "***"


def test_help_is_grouped_with_real_metavars() -> None:
    out = run_cli("serve", "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for title, _ in setting_groups():
        assert f"\n{title}:\n" in text, title
    assert "--store-url URL, --store URL" in text and "LIVEREC_STORE_URL" in text
    assert "--model-path PATH|none, --model PATH|none" in text and "LIVEREC_MODEL_PATH" in text
    assert "--events-per-s RATE" in text and "--hello-timeout-s SECONDS" in text
    assert "--demo [on|off]" in text and "--no-demo" in text
    assert "--log-level debug|info|warning|error|critical" in text
    for f in fields(Settings):
        assert flag_name(f.name) in text and "LIVEREC_" + f.name.upper() in text, f.name


def _outside(bound: Bound) -> str:
    """A value just outside `bound` (every bound has a lower end)."""
    assert bound.low is not None
    return str(bound.low if bound.strict else bound.low - 1)


@pytest.mark.parametrize("through", ["flag", "variable"])
def test_every_bounded_setting_refuses_a_value_out_of_its_range(through: str) -> None:
    """One run with every bounded setting just out of range: each one's message is in
    the error line, through flags and through variables alike."""
    names = dict.fromkeys(name for name, _, _ in BOUNDS)
    values = {name: _outside(bound) for name, bound, _ in BOUNDS}
    if through == "flag":
        out = run_cli("serve", "--check", *(a for n in names for a in (flag_name(n), values[n])))
    else:
        out = run_cli("serve", "--check", env={"LIVEREC_" + n.upper(): values[n] for n in names})
    assert out.returncode == 2, out.stderr
    for name, _, message in BOUNDS:
        assert message in out.stderr, name


# Limits that were module constants, now settings: (name, a value other than the default).
FORMER_CONSTANTS = {
    "catalog_max_items_per_put": 3,
    "catalog_max_put_bytes": 4096,
    "catalog_list_limit": 2,
    "model_score_timeout_s": 0.5,
    "influence_contributors": 7,
}


@pytest.mark.parametrize("through", ["flag", "variable"])
def test_former_constants_are_read_from_flags_and_variables(through: str) -> None:
    given = {name: str(value) for name, value in FORMER_CONSTANTS.items()}
    if through == "flag":
        shown = checked(*(a for n, v in given.items() for a in (flag_name(n), v)))
    else:
        shown = checked(env={"LIVEREC_" + n.upper(): v for n, v in given.items()})
    assert {n: shown[n] for n in given} == FORMER_CONSTANTS
    defaults = Settings()
    assert all(getattr(defaults, n) != v for n, v in FORMER_CONSTANTS.items())
