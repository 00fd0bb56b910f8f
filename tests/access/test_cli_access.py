"""``msec user ...`` and ``msec token ...`` through typer's CliRunner, on a fresh data dir."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from msec.access.model import PrincipalKind
from msec.access.principals import AuthReason, InvalidToken
from msec.cli.access import _principals, token_app, user_app

PASSWORD = "correct horse battery"

app = typer.Typer()
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def msec(data_dir: Path, *args: str, input: str | None = None):
    return runner.invoke(app, [*args, "--data-dir", str(data_dir)], input=input)


def said(result) -> str:
    """What the command said, with rich's line wrapping undone."""
    return " ".join(result.output.split())


def json_lines(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def add_maria(data_dir: Path) -> None:
    args = "user add maria --tenant santander -r citizen -r caregiver --subject maria"
    result = msec(data_dir, *args.split(), "--password-stdin", input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "added user:maria" in said(result)


def test_user_add_list_disable_enable(data_dir: Path) -> None:
    add_maria(data_dir)
    prompted = msec(
        data_dir, "user", "add", "ops", "-r", "operator", input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert prompted.exit_code == 0, prompted.output
    users = {u["name"]: u for u in json_lines(msec(data_dir, "user", "list"))}
    assert users["maria"] == {
        "id": "user:maria",
        "name": "maria",
        "tenant": "santander",
        "roles": ["caregiver", "citizen"],
        "subject": "maria",
        "disabled": False,
        "locked_until": None,
        "created": users["maria"]["created"],
    }
    assert users["ops"]["tenant"] == "default"  # the installation's tenant
    assert [
        u["name"] for u in json_lines(msec(data_dir, "user", "list", "--tenant", "santander"))
    ] == ["maria"]

    assert "disabled user:maria" in said(msec(data_dir, "user", "disable", "maria"))
    assert "already disabled" in said(msec(data_dir, "user", "disable", "maria"))
    assert json_lines(msec(data_dir, "user", "list"))[0]["disabled"] is True
    assert "enabled user:maria" in said(msec(data_dir, "user", "enable", "maria"))

    principals, close = _principals(None, data_dir)
    try:
        principal = principals.authenticate_password("maria", PASSWORD)
        assert principal.kind is PrincipalKind.USER and principal.roles == {"citizen", "caregiver"}
        assert principals.authenticate_password("ops", PASSWORD).roles == {"operator"}
    finally:
        close()


def test_passwords_never_come_from_or_go_to_the_command_line(data_dir: Path) -> None:
    result = msec(data_dir, "user", "add", "bob", "--password", PASSWORD)
    assert result.exit_code == 2 and "No such option" in said(result)
    add_maria(data_dir)
    listing = msec(data_dir, "user", "list")
    assert PASSWORD not in listing.output and "argon2" not in listing.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["user", "add", "Bad Name", "--password-stdin"], "lower case"),
        (["user", "add", "bob", "-r", "wizard", "--password-stdin"], "unknown roles"),
        (["user", "add", "bob", "--tenant", "atlantis", "--password-stdin"], "no tenant"),
        (["user", "disable", "nobody"], "no user 'nobody'"),
        (["user", "enable", "nobody"], "no user 'nobody'"),
        (["token", "issue", "user:nobody"], "no principal"),
        (["token", "issue", "maria"], "not a principal id"),
        (["token", "revoke", "0" * 24], "no token"),
    ],
)
def test_errors_exit_2_with_a_message(data_dir: Path, args: list[str], message: str) -> None:
    result = msec(data_dir, *args, input=PASSWORD + "\n")
    assert result.exit_code == 2, result.output
    assert message in said(result)
    assert result.stdout == ""


def test_a_short_password_is_refused(data_dir: Path) -> None:
    result = msec(data_dir, "user", "add", "bob", "--password-stdin", input="short\n")
    assert result.exit_code == 2 and "characters" in said(result)


def test_token_issue_list_revoke(data_dir: Path) -> None:
    add_maria(data_dir)
    issued = msec(data_dir, "token", "issue", "user:maria", "--ttl", "600", "--label", "phone")
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip()
    match = re.fullmatch(r"msec_([0-9a-f]{24})_[A-Za-z0-9_-]{43}", token)
    assert match is not None  # stdout holds the token and nothing else
    token_id = match.group(1)
    assert f"issued token {token_id} for user:maria" in said(issued)
    forever = msec(data_dir, "token", "issue", "user:maria", "--ttl", "0").stdout.strip()

    listed = json_lines(msec(data_dir, "token", "list", "user:maria"))
    first = listed[0]
    assert (first["id"], first["label"], first["state"]) == (token_id, "phone", "active")
    assert listed[0]["expires_at"] == pytest.approx(listed[0]["created"] + 600)
    assert listed[1]["expires_at"] is None
    secret = token.split("_", 2)[2]  # msec_<24 hex id>_<43 base64url, which may hold "_">
    assert len(secret) == 43
    assert token not in json.dumps(listed) and secret not in json.dumps(listed)

    principals, close = _principals(None, data_dir)
    try:
        assert principals.authenticate_token(token).id == "user:maria"
        revoked = msec(data_dir, "token", "revoke", token_id)
        assert revoked.exit_code == 0 and f"revoked token {token_id}" in said(revoked)
        with pytest.raises(InvalidToken) as info:
            principals.authenticate_token(token)
        assert info.value.reason == AuthReason.REVOKED
        # The whole token pasted instead of its id works too.
        again = msec(data_dir, "token", "revoke", forever)
        assert again.exit_code == 0 and "revoked token" in said(again)
        assert "already revoked" in said(msec(data_dir, "token", "revoke", token_id))
    finally:
        close()
    states = [t["state"] for t in json_lines(msec(data_dir, "token", "list", "user:maria"))]
    assert states == ["revoked", "revoked"]


def test_every_cli_change_is_logged(data_dir: Path) -> None:
    add_maria(data_dir)
    token_id = msec(data_dir, "token", "issue", "user:maria").stdout.strip()[5:29]
    msec(data_dir, "token", "revoke", token_id)
    msec(data_dir, "user", "disable", "maria")
    principals, close = _principals(None, data_dir)
    try:
        actions = [e.action for e in reversed(principals.events())]
        assert actions == ["user.added", "token.issued", "token.revoked", "user.disabled"]
        assert principals.log is not None and principals.log.size() == 4
    finally:
        close()
