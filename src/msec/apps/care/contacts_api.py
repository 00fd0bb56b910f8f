"""The contacts' API: who is told of a home's alarms, managed by the operators.

A home's contacts are decided as the resource ``<home>-gw/care/contacts`` with ``SET`` for
reading as well as changing them: the tenant's operators (and the person herself, the home's
data subject) may; caregivers, even with a consent grant, may not (they would see the other
caregivers' addresses). Every decision on a home is audited (it holds personal data).

* ``GET /api/v1/care/homes/{home}/contacts``: the contacts, oldest first;
* ``POST /api/v1/care/homes/{home}/contacts`` with ``{"kind": "email"|"webhook", "address",
  "name", "role": "caregiver"|"operator", "secret_name"}`` (webhooks only): ``201`` and the
  contact; ``422`` with a message naming the field for anything invalid, ``409`` for a
  second contact with the same address, ``413`` for a body over 8 KiB;
* ``DELETE /api/v1/care/homes/{home}/contacts/{id}``: ``204``, or ``404``.

``404`` for a home that is not registered (no ``<home>-gw`` device) or not a home name.

(No ``from __future__ import annotations``: FastAPI resolves the routes' annotations, and
``Caller`` is local.)
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from msec.access.model import Principal, Verb
from msec.apps.care.contacts import ContactBook, ContactError, DuplicateContact, check_home
from msec.apps.care.model import device_name
from msec.registry.sql import SqlRegistry
from msec.web.bodies import read_json_object

__all__ = ["add_contacts_api", "contacts_target"]

_PREFIX = "/api/v1/care/homes/{home}/contacts"
_MAX_BODY = 8192
_FIELDS = frozenset({"kind", "address", "name", "role", "secret_name"})


def contacts_target(home: str) -> tuple[str, str, str]:
    """The access-layer resource standing for a home's contacts."""
    return device_name(home, "gw"), "care", "contacts"


def add_contacts_api(app: FastAPI, book: ContactBook, registry: SqlRegistry) -> None:
    caller: Callable[..., Principal] = app.state.api_caller
    allow: Callable[..., None] = app.state.api_allow
    Caller = Annotated[Principal, Depends(caller)]

    def home_of(request: Request, who: Principal, home: str) -> str:
        try:
            check_home(home)
        except ContactError:
            raise HTTPException(404, "no such home") from None
        allow(request, who, Verb.SET, *contacts_target(home))
        if registry.get(device_name(home, "gw")) is None:
            raise HTTPException(404, "no such home")
        return home

    @app.get(_PREFIX, tags=["care"])
    def list_contacts(request: Request, home: str, who: Caller) -> list[dict[str, Any]]:
        """Who is told of the home's alarms (operators)."""
        return [c.as_dict() for c in book.list(home_of(request, who, home))]

    @app.post(_PREFIX, tags=["care"], status_code=201)
    async def add_contact(request: Request, home: str, who: Caller) -> dict[str, Any]:
        """Add an e-mail or webhook contact to the home (operators)."""
        home = await run_in_threadpool(home_of, request, who, home)  # audited: a database write
        data = await _body(request)
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise HTTPException(422, f"unknown field(s): {', '.join(unknown)[:200]}")
        for field in ("kind", "address"):
            if field not in data:
                raise HTTPException(422, f"{field} is required")
        for field in ("kind", "address", "name", "role"):
            if field in data and not isinstance(data[field], str):
                raise HTTPException(422, f"{field} is text")
        secret_name = data.get("secret_name")
        if secret_name is not None and not isinstance(secret_name, str):
            raise HTTPException(422, "secret_name is text")
        try:
            contact = await run_in_threadpool(lambda: book.add(
                home, data["kind"], data["address"], name=data.get("name", ""),
                role=data.get("role", "caregiver"), secret_name=secret_name, by=who.id))
        except DuplicateContact as exc:
            raise HTTPException(409, str(exc)) from None
        except ContactError as exc:
            raise HTTPException(422, str(exc)) from None
        return contact.as_dict()

    @app.delete(_PREFIX + "/{contact_id}", tags=["care"], status_code=204)
    def delete_contact(request: Request, home: str, contact_id: str, who: Caller) -> Response:
        """Remove a contact and its encrypted address (operators)."""
        home = home_of(request, who, home)
        if not contact_id.isdigit() or len(contact_id) > 18:
            raise HTTPException(404, "no such contact")
        if not book.remove(home, int(contact_id)):
            raise HTTPException(404, "no such contact")
        return Response(status_code=204)


async def _body(request: Request) -> dict[str, Any]:
    return await read_json_object(request, _MAX_BODY, status=422)
