"""``msec user ...`` and ``msec token ...``: the access layer's accounts and API tokens.

Passwords are never taken from the command line (it ends up in shell history and ``ps``):
they are prompted for, with confirmation, or read from stdin with ``--password-stdin``. A
token is printed once, on stdout, and never again. Listings are JSON lines on stdout;
messages go to stderr. Exit 0 on success, 2 on usage errors and unknown names.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from msec.core.errors import MsecError
from msec.platform.settings import Settings

if TYPE_CHECKING:
    from msec.access.principals import SqlPrincipals
    from msec.platform.platform import Platform

user_app = typer.Typer(help="User accounts: add, list, disable, enable.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: issue, revoke, list.", no_args_is_help=True)
console = Console(stderr=True)

EXIT_ERROR = 2

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file.", exists=True, dir_okay=False),
]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Where data and keys live.")]


def _principals(
    config: Path | None, data_dir: Path | None
) -> tuple[SqlPrincipals, Callable[[], None]]:
    """The installation's principal store (tables created where missing) and its closer."""
    from msec.platform.platform import Platform

    platform = Platform.open(Settings.load(config, data_dir=data_dir))
    return platform.principals, platform.close


def _open(config: Path | None, data_dir: Path | None) -> tuple[SqlPrincipals, Callable[[], None]]:
    try:
        return _principals(config, data_dir)
    except (MsecError, OSError, ValueError) as exc:
        _fail(f"cannot open the installation: {exc}")


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(EXIT_ERROR)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name: a-z 0-9 . _ - (lower case).")],
    role: Annotated[
        list[str] | None,
        typer.Option("--role", "-r", help="A role (repeat for more): admin, operator, ..."),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant (default: the installation's).")
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="The data subject this user is, if any.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add a user with a password (prompted for, or read with --password-stdin)."""
    from msec.access.principals import PrincipalError

    password = _read_password(password_stdin)
    if tenant is None:
        tenant = Settings.load(config, data_dir=data_dir).tenant
    principals, close = _open(config, data_dir)
    try:
        user = principals.add_user(
            name, tenant=tenant, roles=role or [], password=password, subject=subject
        )
    except (PrincipalError, ValueError) as exc:
        _fail(str(exc))
    finally:
        close()
    roles = ", ".join(sorted(user.roles)) or "none"
    console.print(f"added {user.principal_id} (tenant {user.tenant}; roles {roles})")


@user_app.command("list")
def user_list(
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's.")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List users as JSON lines (never their password hashes)."""
    principals, close = _open(config, data_dir)
    try:
        users = principals.list_users(tenant=tenant)
    finally:
        close()
    now = time.time()
    for user in users:
        row = {
            "id": user.principal_id,
            "name": user.name,
            "tenant": user.tenant,
            "roles": sorted(user.roles),
            "subject": user.subject,
            "disabled": user.disabled,
            "locked_until": user.locked_until if user.locked(now) else None,
            "created": user.created,
        }
        print(json.dumps(row))


def _switch(name: str, disable: bool, config: Path | None, data_dir: Path | None) -> None:
    from msec.access.principals import PrincipalError

    principals, close = _open(config, data_dir)
    try:
        changed = principals.disable_user(name) if disable else principals.enable_user(name)
    except PrincipalError as exc:
        _fail(str(exc))
    finally:
        close()
    verb = "disabled" if disable else "enabled"
    console.print(f"{verb} user:{name}" if changed else f"user:{name} was already {verb}")


@user_app.command("disable")
def user_disable(
    name: Annotated[str, typer.Argument(help="User name.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Disable a user: its password and tokens fail from the next request on."""
    _switch(name, True, config, data_dir)


@user_app.command("enable")
def user_enable(
    name: Annotated[str, typer.Argument(help="User name.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Enable a user again (and lift a lockout after failed logins)."""
    _switch(name, False, config, data_dir)


@token_app.command("issue")
def token_issue(
    principal_id: Annotated[str, typer.Argument(help="user:<name> or service:<name>.")],
    ttl: Annotated[
        float, typer.Option("--ttl", min=0, help="Seconds of validity; 0: until revoked.")
    ] = 3600.0,
    label: Annotated[str, typer.Option("--label", help="What the token is for.")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Issue an API token and print it once on stdout (it cannot be shown again)."""
    from msec.access.principals import PrincipalError

    principals, close = _open(config, data_dir)
    try:
        token, info = principals.issue_token(principal_id, ttl_s=ttl or None, label=label)
    except (PrincipalError, ValueError) as exc:
        _fail(str(exc))
    finally:
        close()
    expiry = "never" if info.expires_at is None else _when(info.expires_at)
    console.print(f"issued token {info.id} for {info.principal_id} (expires {expiry})")
    print(token)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (24 hex digits).")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a token for good: it fails from the next request on."""
    from msec.access.principals import TOKEN_PREFIX, PrincipalError

    if token_id.startswith(TOKEN_PREFIX):  # the whole token pasted: its id is the 2nd part
        token_id = token_id[len(TOKEN_PREFIX) :].split("_", 1)[0]
    principals, close = _open(config, data_dir)
    try:
        revoked = principals.revoke_token(token_id)
    except PrincipalError as exc:
        _fail(str(exc))
    finally:
        close()
    console.print(f"revoked token {token_id}" if revoked else f"{token_id} was already revoked")


@token_app.command("list")
def token_list(
    principal_id: Annotated[str, typer.Argument(help="user:<name> or service:<name>.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List a principal's tokens as JSON lines (ids and dates, never secrets)."""
    principals, close = _open(config, data_dir)
    try:
        tokens = principals.list_tokens(principal_id)
    finally:
        close()
    now = time.time()
    for info in tokens:
        row = {
            "id": info.id,
            "principal": info.principal_id,
            "label": info.label,
            "state": info.state(now),
            "created": info.created,
            "expires_at": info.expires_at,
            "revoked_at": info.revoked_at,
            "last_used": info.last_used,
        }
        print(json.dumps(row))


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


policy_app = typer.Typer(
    help="The installation's access policies: add, list, remove.", no_args_is_help=True
)


def _platform(config: Path | None, data_dir: Path | None) -> Platform:
    from msec.platform.platform import Platform

    try:
        return Platform.open(Settings.load(config, data_dir=data_dir))
    except (MsecError, OSError, ValueError) as exc:
        _fail(f"cannot open the installation: {exc}")


@policy_app.command("add")
def policy_add(
    file: Annotated[
        str, typer.Argument(help="JSON file with a policy or a list of them; - for stdin.")
    ],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    by: Annotated[str, typer.Option("--by", help="Who adds it (recorded).")] = "cli",
) -> None:
    """Add policies (see docs/access-control.md for the format)."""
    from msec.access.policies import PolicyError, policy_from_json

    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {file}: {exc}")
    items = data if isinstance(data, list) else [data]
    try:
        policies = [policy_from_json(item) for item in items]
    except PolicyError as exc:
        _fail(str(exc))
    platform = _platform(config, data_dir)
    try:
        for policy in policies:
            platform.policies.add(policy, by=by)
            console.print(f"added {policy.id}")
    except PolicyError as exc:
        _fail(str(exc))
    finally:
        platform.close()


@policy_app.command("list")
def policy_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Print the active policies as JSON lines (the built-in ones are not listed)."""
    from msec.access.policies import policy_to_json

    platform = _platform(config, data_dir)
    try:
        for policy in platform.policies.active():
            print(json.dumps(policy_to_json(policy), sort_keys=True))
    finally:
        platform.close()


@policy_app.command("remove")
def policy_remove(
    policy_id: str,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    by: Annotated[str, typer.Option("--by", help="Who removes it (recorded).")] = "cli",
) -> None:
    """Remove a policy (it stays in the history and the log)."""
    platform = _platform(config, data_dir)
    try:
        if not platform.policies.remove(policy_id, by=by):
            _fail(f"no active policy {policy_id!r}")
        console.print(f"removed {policy_id}")
    finally:
        platform.close()
