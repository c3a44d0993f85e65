"""Option bundles: options several commands share, declared once as a dataclass.

A bundle is a frozen dataclass whose fields are ``Annotated`` typer options with defaults
(sqlite-utils' ``@output_options`` is the model). A command names the bundle as one
parameter and :func:`with_bundles` spreads the bundle's fields into the command's options::

    @with_bundles
    def show(cohort_id: CohortId, *, amplitude: AmplitudeOptions) -> None:
        cfg, url = amplitude.target()

Typer sees ``--region``, ``--base-url``... as options of ``show``; the function receives one
``AmplitudeOptions``. A bundle parameter is keyword-only and needs no default: the
decorator supplies the fields' defaults. The options appear in ``--help`` where the bundle
parameter stands, a bundle's own fields before those it inherits; every parameter of the
command becomes keyword-only, so bundles may stand first (``def check(*, target:
DestinationOptions, mode: Mode = None, ...)``).

A bundle adds behaviour next to its options (``AmplitudeOptions.client``,
``DestinationOptions.destination``): a command asks its bundle for what it needs instead
of passing fifteen options on by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from cohortctl.cli.options import (
    AllowInsecureHttp,
    ConfigFile,
    Output,
    Profile,
    Quiet,
    Verbose,
    check_as_curl,
    check_verbosity,
)
from cohortctl.cli.render import OutputFormat
from cohortctl.config import Config

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def is_bundle(annotation: Any) -> bool:
    """True for a dataclass type used as an option bundle."""
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def with_bundles(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with every bundle parameter replaced by the bundle's options (see module)."""
    hints = typing.get_type_hints(func, include_extras=True)
    signature = inspect.signature(func)
    parameters: list[inspect.Parameter] = []
    bundles: dict[str, tuple[type[Any], list[str]]] = {}
    defaults: dict[type[Any], dict[str, Any]] = {}
    for parameter in signature.parameters.values():
        annotation = hints.get(parameter.name, parameter.annotation)
        if not is_bundle(annotation):
            parameters.append(parameter.replace(kind=_KEYWORD, annotation=annotation))
            continue
        field_hints = typing.get_type_hints(annotation, include_extras=True)
        names = []
        for field in _fields_in_help_order(annotation):
            if not field.init:
                continue
            if field.default is dataclasses.MISSING:
                raise TypeError(f"bundle field {annotation.__name__}.{field.name} needs a default")
            parameters.append(
                inspect.Parameter(
                    field.name, _KEYWORD, default=field.default, annotation=field_hints[field.name]
                )
            )
            names.append(field.name)
        bundles[parameter.name] = (annotation, names)
        defaults[annotation] = {f.name: f.default for f in dataclasses.fields(annotation)}
    seen = [p.name for p in parameters]
    if len(seen) != len(set(seen)):
        raise TypeError(f"{func.__name__}: a bundle option repeats a parameter name")

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        for name, (bundle, names) in bundles.items():
            # A command may hide a field it does not use (mock's per-call commands): default.
            kwargs[name] = bundle(
                **{field: kwargs.pop(field, defaults[bundle][field]) for field in names}
            )
        return func(**kwargs)

    returns = hints.get("return", signature.return_annotation)
    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters, return_annotation=returns
    )
    command.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    return command


def _fields_in_help_order(bundle: type[Any]) -> list[dataclasses.Field[Any]]:
    """A bundle's fields, its own before those it inherits (``--destination`` and ``--url``
    before the ``--profile`` its settings base adds)."""
    fields = {field.name: field for field in dataclasses.fields(bundle)}
    ordered: dict[str, dataclasses.Field[Any]] = {}
    for cls in bundle.__mro__:
        for name in vars(cls).get("__annotations__", {}):
            if name in fields and name not in ordered:
                ordered[name] = fields[name]
    return list(ordered.values())


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """The output bundle: ``-o table|json``, ``-v`` (every exchange), ``-q`` (summary only)."""

    output: Output = OutputFormat.table
    verbose: Verbose = 0
    quiet: Quiet = False

    def __post_init__(self) -> None:
        check_verbosity(self.verbose, self.quiet)


@dataclasses.dataclass(frozen=True)
class DryRunOptions:
    """The base of a bundle with ``--dry-run`` and ``--as-curl`` (``upload``'s, ``mock``'s,
    ``sync``'s): each declares both flags with its own help, this base checks them once
    (``--as-curl`` only shapes a dry run)."""

    dry_run: bool = False
    as_curl: bool = False

    def __post_init__(self) -> None:
        check_as_curl(self.as_curl, self.dry_run)


@dataclasses.dataclass(frozen=True)
class SettingsOptions:
    """The settings bundle: ``--profile``, ``--config``, ``--allow-insecure-http``.

    The base of every bundle that reaches a server (:class:`~cohortctl.cli.customer_options.
    AmplitudeOptions`, :class:`~cohortctl.cli.destination_options.DestinationOptions`).
    """

    profile: Profile = None
    config: ConfigFile = None
    allow_insecure_http: AllowInsecureHttp = False

    def load_config(self) -> Config:
        """The resolved settings: flag > environment > config profile > default."""
        return Config.load(self.profile, path=self.config)
