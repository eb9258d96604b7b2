"""Command-line flags generated from Settings, and the parser that reports errors in one line.

Owns: how a Settings field becomes a `liverec serve` flag (grouped by the `# ---`
sections of Settings, with a metavar saying what it takes, `--demo` / `--no-demo`
switches for booleans, `none`/`off` for optional limits), the short aliases
(`--store`, `--model`), reading the given flags back into a mapping for
`Settings.from_sources`, and `Parser`, whose errors are one line and exit 2.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any, NoReturn, get_type_hints

from .config import (
    CHOICES,
    ENV_PREFIX,
    Settings,
    base_type,
    is_optional,
    parse_value,
    setting_groups,
    shown_default,
)
from .errors import ConfigError

# Shorter names for the flags the README uses; the setting (and its variable) is the long one.
ALIASES = {"store_url": "--store", "model_path": "--model"}
# Metavars of text settings, by name (others say what their type takes).
TEXT_METAVARS = {
    "host": "ADDRESS",
    "store_url": "URL",
    "model_path": "PATH",
    "ab_model_path": "PATH",
    "web_dir": "DIR",
    "jwt_secret": "SECRET",
    "admin_token": "TOKEN",
    "learn_preset": "NAME",
    "learn_group": "NAME",
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (`liverec serve: error: ...`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def metavar(name: str, hint: Any) -> str:
    kind = base_type(hint)
    if name in CHOICES:
        word = "|".join(CHOICES[name])
    elif kind is bool:
        word = "on|off"
    elif kind is tuple:
        word = "A,B,..."
    elif name.endswith("_per_s"):
        word = "RATE"
    elif name.endswith("_s"):
        word = "SECONDS"
    elif name.endswith("_bytes"):
        word = "BYTES"
    elif kind is int:
        word = "N"
    elif kind is float:
        word = "NUMBER"
    else:
        word = TEXT_METAVARS.get(name, "TEXT")
    return f"{word}|none" if is_optional(hint) and kind is not bool else word


def _type(flag: str, hint: Any, choices: tuple[str, ...] = ()) -> Any:
    def parse(raw: str) -> Any:
        try:
            return parse_value(flag, hint, raw, choices)
        except ConfigError as exc:
            # argparse reports ArgumentTypeError as "argument --flag: <message>"
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag}: ")) from None

    return parse


def add_setting_flags(
    parser: argparse.ArgumentParser, names: list[str] | None = None, groups: bool = True
) -> None:
    """One flag per setting (all, or `names`); an absent flag leaves no attribute, so
    `given_settings` can tell "not given" from an explicit `none`."""
    hints = get_type_hints(Settings)
    by_name = {f.name: f for f in fields(Settings)}
    wanted = set(names) if names is not None else set(by_name)
    for title, members in setting_groups():
        chosen = [n for n in members if n in wanted]
        if not chosen:
            continue
        target: Any = parser.add_argument_group(title) if groups else parser
        for name in chosen:
            f, hint = by_name[name], hints[name]
            flag = flag_name(name)
            help_text = (
                f"{f.metadata.get('help', '')} [default: {shown_default(f.default)}; "
                f"env {ENV_PREFIX}{name.upper()}]"
            ).replace("%", "%%")
            options = [flag] + ([ALIASES[name]] if name in ALIASES else [])
            if base_type(hint) is bool:
                target.add_argument(
                    *options,
                    dest=name,
                    nargs="?",
                    const=True,
                    default=argparse.SUPPRESS,
                    metavar="on|off",
                    type=_type(flag, hint),
                    help=help_text,
                )
                target.add_argument(
                    "--no-" + flag[2:],
                    dest=name,
                    action="store_const",
                    const=False,
                    default=argparse.SUPPRESS,
                    help=f"same as {flag} off",
                )
                continue
            target.add_argument(
                *options,
                dest=name,
                default=argparse.SUPPRESS,
                metavar=metavar(name, hint),
                type=_type(flag, hint, CHOICES.get(name, ())),
                help=help_text,
            )


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (None included: an explicit "off")."""
    return {f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)}
