"""Which resources hold personal data: matched by ``provider/service/resource`` patterns.

Configured in ``[sensitive] resources`` and extended by the apps that own such resources
(:meth:`SensitiveResources.add`). Readings of a matching resource are stored encrypted in
the companion store under their device's subject, never in the twin in clear.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from fnmatch import fnmatchcase

__all__ = ["SensitiveResources"]

_CACHE_MAX = 100_000


class SensitiveResources:
    """A set of ``fnmatch`` patterns (``*``, ``?``, ``[...]``) over ``provider/service/resource``.

    Thread-safe; answers are cached per resource (patterns only ever get added).
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self._patterns: list[str] = []
        self._cache: dict[tuple[str, str, str], bool] = {}
        self._lock = threading.Lock()
        for pattern in patterns:
            self.add(pattern)

    def add(self, pattern: str) -> None:
        """Mark every resource matching ``pattern`` sensitive from now on."""
        if pattern.count("/") != 2 or not all(pattern.split("/")):
            raise ValueError(f"{pattern!r} is not a provider/service/resource pattern")
        with self._lock:
            if pattern not in self._patterns:
                self._patterns.append(pattern)
                self._cache.clear()

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(self._patterns)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def __call__(self, provider: str, service: str, resource: str) -> bool:
        """Whether this resource is sensitive."""
        key = (provider, service, resource)
        found = self._cache.get(key)
        if found is None:
            path = f"{provider}/{service}/{resource}"
            found = any(fnmatchcase(path, pattern) for pattern in self._patterns)
            with self._lock:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
                self._cache[key] = found
        return found
