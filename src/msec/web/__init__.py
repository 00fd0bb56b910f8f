"""HTTP layer: the FastAPI application factory and Prometheus metrics."""

from msec.web.app import create_app

__all__ = ["create_app"]
