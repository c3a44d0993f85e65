"""``cohortctl config``: where every setting comes from."""

from __future__ import annotations

import typer

from cohortctl.cli.options import ConfigFile, Output, Profile
from cohortctl.cli.render import OutputFormat, key_values, out, print_json, table
from cohortctl.config import SETTINGS, Config

app = typer.Typer(
    help="Inspect settings: flag > environment > profile > default.", no_args_is_help=True
)


@app.command("show")
def show(
    profile: Profile = None,
    config: ConfigFile = None,
    output: Output = OutputFormat.table,
) -> None:
    """Show every setting, its value (secrets redacted) and where it came from."""
    cfg = Config.load(profile, path=config)
    resolved = cfg.all()
    if output is OutputFormat.json:
        print_json(
            {
                "ok": True,
                "config_file": str(cfg.path),
                "config_file_exists": cfg.path.exists(),
                "profile": cfg.profile_name,
                "settings": {
                    r.key: {
                        "value": r.shown if r.secret or r.value is None else r.value,
                        "set": r.value is not None,
                        "source": r.source,
                        "env": SETTINGS[r.key].env,
                    }
                    for r in resolved
                },
            }
        )
        return
    exists = "" if cfg.path.exists() else " (not found)"
    out.print(
        key_values(
            [("config file", f"{cfg.path}{exists}"), ("profile", cfg.profile_name or "(none)")]
        )
    )
    out.print(
        table(
            ["setting", "value", "source", "env"],
            [(r.key, r.shown, r.source, SETTINGS[r.key].env) for r in resolved],
        )
    )
