"""Fixtures of the Connected Care tests."""

from care_site import care_site

__all__ = ["care_site"]
