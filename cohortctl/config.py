"""Settings: flag > environment > YAML profile > default, each value knowing where it came from.

The config file is YAML at ``$COHORTCTL_CONFIG`` or ``<user config dir>/cohortctl/config.yaml``::

    default_profile: staging
    profiles:
      staging:
        api_key: ...
        secret_key: ...
        app_id: 123456
        region: eu
        partner_url: https://staging.partner.example/amplitude
        partner_api_key: ...

Secrets (every key and secret) are never printed: ``redact`` is the only way they reach output.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import yaml

from cohortctl.errors import ConfigError

CONFIG_ENV = "COHORTCTL_CONFIG"
PROFILE_ENV = "COHORTCTL_PROFILE"

REGION_HOSTS = {
    "us": "https://amplitude.com",
    "eu": "https://analytics.eu.amplitude.com",
}


@dataclass(frozen=True)
class Setting:
    """One configurable value: its profile key, environment variable and default."""

    key: str
    env: str
    help: str
    secret: bool = False
    default: Any = None


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting("api_key", "AMPLITUDE_API_KEY", "Amplitude project API key", secret=True),
        Setting("secret_key", "AMPLITUDE_SECRET_KEY", "Amplitude project secret key", secret=True),
        Setting("region", "AMPLITUDE_REGION", "Amplitude data region: us or eu", default="us"),
        Setting("base_url", "AMPLITUDE_BASE_URL", "Override the Amplitude host (fake, proxy)"),
        Setting("app_id", "AMPLITUDE_APP_ID", "Amplitude project id (integer)"),
        Setting("owner", "AMPLITUDE_OWNER", "Login email of the cohort owner"),
        Setting("partner_url", "COHORTCTL_PARTNER_URL", "Partner endpoint base URL"),
        Setting("partner_api_key", "COHORTCTL_PARTNER_API_KEY", "Partner API key", secret=True),
        Setting(
            "partner_secret", "COHORTCTL_PARTNER_SECRET", "Partner Basic-auth secret", secret=True
        ),
        Setting(
            "partner_auth",
            "COHORTCTL_PARTNER_AUTH",
            "Partner auth: basic, header, bearer or none",
            default="basic",
        ),
        Setting("partner_app_id", "COHORTCTL_PARTNER_APP_ID", "app_id header for header auth"),
    )
}


@dataclass(frozen=True)
class Resolved:
    """A setting's value and a human description of where it came from."""

    key: str
    value: Any
    source: str
    secret: bool

    @property
    def shown(self) -> str:
        """The value as it may be printed: secrets redacted."""
        if self.value is None:
            return "(not set)"
        return redact(str(self.value)) if self.secret else str(self.value)


def redact(value: str | None) -> str:
    """What is printed in place of a secret: never any of its characters."""
    if not value:
        return "(not set)"
    return "***redacted***"


def app_dir() -> Path:
    """cohortctl's per-user directory (``~/.config/cohortctl`` on Linux, as click places it)."""
    return Path(click.get_app_dir("cohortctl"))


def default_config_path() -> Path:
    """Where the config file is looked for when ``$COHORTCTL_CONFIG`` is not set."""
    return app_dir() / "config.yaml"


class Config:
    """Resolves settings for one invocation; create with :meth:`load`."""

    def __init__(
        self,
        *,
        path: Path,
        profile_name: str | None,
        profile: Mapping[str, Any],
        env: Mapping[str, str],
    ) -> None:
        self.path = path
        self.profile_name = profile_name
        self.profile = dict(profile)
        self.env = env

    @classmethod
    def load(
        cls,
        profile: str | None = None,
        *,
        path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Config:
        """Read the config file (if any) and select the profile: flag > env > file default."""
        env = os.environ if env is None else env
        if path is None and env.get(CONFIG_ENV):
            path = Path(env[CONFIG_ENV]).expanduser()
        path = path or default_config_path()
        data = _read_yaml(path)
        profiles = data.get("profiles") or {}
        if not isinstance(profiles, dict):
            raise ConfigError(f"{path}: 'profiles' must be a mapping of profile names")
        _warn_if_readable_by_others(path, profiles)
        name = profile or env.get(PROFILE_ENV) or data.get("default_profile")
        if name is None and "default" in profiles:
            name = "default"
        chosen: Mapping[str, Any] = {}
        if name is not None:
            if name not in profiles:
                known = ", ".join(sorted(profiles)) or "none"
                raise ConfigError(f"profile {name!r} not found in {path} (profiles: {known})")
            chosen = profiles[name] or {}
            if not isinstance(chosen, dict):
                raise ConfigError(f"{path}: profile {name!r} must be a mapping")
            unknown = sorted(set(chosen) - set(SETTINGS))
            if unknown:
                raise ConfigError(
                    f"{path}: profile {name!r} has unknown keys: {', '.join(unknown)} "
                    f"(known: {', '.join(SETTINGS)})"
                )
        return cls(path=path, profile_name=name, profile=chosen, env=env)

    def resolve(self, key: str, flag: Any = None) -> Resolved:
        """The value of setting ``key``: the flag if given, else env, profile, default."""
        setting = SETTINGS[key]
        if flag is not None:
            return Resolved(key, flag, "flag", setting.secret)
        env_value = self.env.get(setting.env)
        if env_value not in (None, ""):
            return Resolved(key, env_value, f"env {setting.env}", setting.secret)
        if self.profile.get(key) is not None:
            source = f"profile {self.profile_name!r} ({self.path})"
            return Resolved(key, self.profile[key], source, setting.secret)
        return Resolved(key, setting.default, "default", setting.secret)

    def get(self, key: str, flag: Any = None) -> Any:
        """Just the value of :meth:`resolve`."""
        return self.resolve(key, flag).value

    def require(self, key: str, flag: Any = None, *, flag_name: str | None = None) -> Any:
        """The value of ``key`` or a ConfigError telling every way to set it."""
        value = self.get(key, flag)
        if value in (None, ""):
            setting = SETTINGS[key]
            ways = [f"env {setting.env}", f"'{key}' in a config profile ({self.path})"]
            if flag_name:
                ways.insert(0, flag_name)
            raise ConfigError(f"{setting.help} is not set: use {' or '.join(ways)}")
        return value

    def all(self) -> list[Resolved]:
        """Every known setting, resolved without flags (for ``config show``)."""
        return [self.resolve(key) for key in SETTINGS]


SECRET_KEYS = frozenset(key for key, setting in SETTINGS.items() if setting.secret)


def _warn_if_readable_by_others(path: Path, profiles: Mapping[str, Any]) -> None:
    """Keys in a file other users can read are not secret: say so once, on stderr."""
    holds_secrets = any(
        isinstance(profile, dict) and SECRET_KEYS & set(profile) for profile in profiles.values()
    )
    if not holds_secrets or os.name != "posix":
        return
    mode = path.stat().st_mode
    if mode & 0o077:
        print(
            f"warning: {path} holds keys and is readable by other users: chmod 600 {path}",
            file=sys.stderr,
        )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML in config file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config file must be a YAML mapping")
    return data


def amplitude_base_url(region: str, base_url: str | None) -> str:
    """The Amplitude host to call: an explicit base URL wins over the region's host."""
    if base_url:
        return base_url.rstrip("/")
    try:
        return REGION_HOSTS[region.lower()]
    except KeyError:
        raise ConfigError(f"unknown region {region!r}: use us or eu") from None


def is_loopback_host(host: str | None) -> bool:
    """True for localhost and addresses in 127.0.0.0/8 or ::1."""
    if not host:
        return False
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ensure_safe_url(url: str, *, allow_insecure_http: bool, what: str = "credentials") -> None:
    """Refuse to send ``what`` over plain http to anything but loopback, unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"URL must start with http:// or https://, got {url!r}")
    if not parts.hostname:
        raise ConfigError(f"URL has no host: {url!r}")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise ConfigError(
            f"refusing to send {what} over plain http to {parts.hostname}",
            hint="use https://, or pass --allow-insecure-http if you really mean it",
        )
