"""The anonymised datasets' API: their metadata and files, for operators and admins.

A dataset is decided as the platform resource ``_platform/care/datasets``: the built-in
policies let operators and admins read it and nobody else (the marketplace will add its own
policy for buyers). Every route needs a bearer token (401 without).

* ``GET /api/v1/care/datasets?sensor_type=&limit=``: the latest datasets' metadata, newest
  period first;
* ``GET /api/v1/care/datasets/{id}``: one dataset's metadata;
* ``GET /api/v1/care/datasets/{id}/data``: its CSV file, checked against its SHA-256 first
  (``500`` if it was altered, ``410`` if it is gone).

(No ``from __future__ import annotations``: FastAPI resolves the routes' annotations, and
``Caller`` is local.)
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response

from msec.access.builtin import PLATFORM
from msec.access.model import Principal, Verb

if TYPE_CHECKING:
    from msec.apps.care.datasets import Dataset, DatasetStore

__all__ = ["add_datasets_api"]

_PREFIX = "/api/v1/care/datasets"
_SENSOR_TYPE = "^[a-z][a-z0-9_]{0,31}$"


def add_datasets_api(app: FastAPI, store: "DatasetStore") -> None:
    caller: Callable[..., Principal] = app.state.api_caller
    allow: Callable[..., None] = app.state.api_allow
    Caller = Annotated[Principal, Depends(caller)]

    def one(request: Request, who: Principal, dataset_id: str) -> "Dataset":
        allow(request, who, Verb.GET, PLATFORM, "care", "datasets")
        if not dataset_id.isdigit() or len(dataset_id) > 18:
            raise HTTPException(404, "no such dataset")
        dataset = store.get(int(dataset_id))
        if dataset is None:
            raise HTTPException(404, "no such dataset")
        return dataset

    @app.get(_PREFIX, tags=["care"])
    def list_datasets(
        request: Request,
        who: Caller,
        sensor_type: Annotated[str | None, Query(pattern=_SENSOR_TYPE)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """The anonymised datasets (one per sensor type and period), newest period first."""
        allow(request, who, Verb.GET, PLATFORM, "care", "datasets")
        return [d.as_dict() for d in store.list(sensor_type, limit=limit)]

    @app.get(_PREFIX + "/{dataset_id}", tags=["care"])
    def get_dataset(request: Request, dataset_id: str, who: Caller) -> dict[str, Any]:
        """One dataset's metadata: period, rows, SHA-256, anonymisation, licence, columns."""
        return one(request, who, dataset_id).as_dict()

    @app.get(_PREFIX + "/{dataset_id}/data", tags=["care"],
             responses={200: {"content": {"text/csv": {}}}})  # fmt: skip
    def get_dataset_data(request: Request, dataset_id: str, who: Caller) -> Response:
        """The dataset's CSV file, as recorded (its SHA-256 is checked before it is sent)."""
        dataset = one(request, who, dataset_id)
        try:
            data = store.read(dataset)
        except FileNotFoundError:
            raise HTTPException(410, "the dataset's file is gone") from None
        except ValueError:
            raise HTTPException(500, "the dataset's file does not match its SHA-256") from None
        name = store.file(dataset).name
        return Response(
            data,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{dataset.sensor_type}-{name}"',
                "X-Content-SHA256": dataset.sha256,
            },
        )
