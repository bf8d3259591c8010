"""One registry shape for every family the engine looks up by name.

Search spaces, supernet kinds, sampling rules, controllers, export formats, data
sets and trackers are each a :class:`Registry`: members register with a
decorator, a second member under the same name is refused, and an unknown name
is one :class:`UnknownNameError` that lists the valid names. A family whose
names carry a parameter (``timm:<model>``) registers a *prefix*: the registry
parses the prefix and hands the rest to the family's factory, as timm's factory
parses ``hf-hub:`` above its own registry, so no registry needs to know any
family.

It lives in the lowest layer that has registries (search spaces), so that the
engine and the search spaces share it without an upward import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from search_spaces.errors import UserError

T = TypeVar("T")


class UnknownNameError(UserError, KeyError, ValueError):
    """A name that no member of a registry has; the message lists the valid names.

    A ``KeyError`` (a failed lookup) and a ``ValueError`` (a bad setting value), so
    callers written against either keep working; ``str()`` is the plain message.
    """

    def __init__(self, what: str, name: object, known: list[str], setting: str | None = None):
        self.what, self.name, self.known, self.setting = what, name, known, setting
        where = f" ({setting})" if setting else ""
        super().__init__(f"unknown {what} {name!r}{where}; available: {', '.join(known) or 'none'}")

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> member, registered by decorator; ``what`` names the family in messages ("search space").

    ``normalize`` maps a user's spelling to the registered name (e.g.
    ``Fashion-MNIST`` -> ``fashion_mnist``); registered names are stored as given.
    """

    def __init__(self, what: str, normalize: Callable[[str], str] | None = None):
        self.what = what
        self._normalize = normalize or (lambda name: name)
        self._members: dict[str, T] = {}
        self._prefixes: dict[str, Callable[..., T]] = {}

    # --- registration ------------------------------------------------------------------------
    def add(self, name: str, member: T) -> T:
        """Register ``member`` under ``name``; a name already taken is a ``ValueError``."""
        if name in self._members:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._members[name] = member
        return member

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; returns the member unchanged."""
        return functools.partial(self.add, name)  # type: ignore[return-value]

    def register_prefix(
        self, prefix: str, shown_as: str | None = None
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register a factory for every name ``<prefix><rest>``: :meth:`get` returns ``factory`` bound to
        ``rest``.

        ``shown_as`` is how the family appears in the list of valid names (default ``<prefix><name>``).
        """

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if prefix in self._prefixes:
                raise ValueError(f"{self.what} prefix {prefix!r} registered twice")
            self._prefixes[prefix] = factory
            factory.shown_as = shown_as or f"{prefix}<name>"  # type: ignore[attr-defined]
            return factory

        return deco

    # --- lookup ------------------------------------------------------------------------------
    def get(self, name: str, setting: str | None = None) -> T:
        """The member called ``name``; an unknown one raises :class:`UnknownNameError` (naming
        ``setting``)."""
        key = self._normalize(str(name))
        if key in self._members:
            return self._members[key]
        for prefix, factory in self._prefixes.items():
            if key.startswith(prefix):
                return functools.partial(factory, key[len(prefix) :])  # type: ignore[return-value]
        raise UnknownNameError(self.what, name, self.known(), setting)

    def canonical(self, name: str, setting: str | None = None) -> str:
        """The registered spelling of ``name`` (checked: unknown names raise as :meth:`get` does)."""
        self.get(name, setting)
        return self._normalize(str(name))

    def __contains__(self, name: object) -> bool:
        key = self._normalize(str(name))
        return key in self._members or any(key.startswith(p) for p in self._prefixes)

    def names(self) -> list[str]:
        """Registered names (not prefix families), sorted."""
        return sorted(self._members)

    def registered(self) -> list[str]:
        """Registered names in the order they were registered (for families whose order means something)."""
        return list(self._members)

    def known(self) -> list[str]:
        """What an error message lists: the names, then each prefix family as it is written."""
        return [*self.names(), *(f.shown_as for f in self._prefixes.values())]  # type: ignore[attr-defined]

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._members.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._members)

    def describe(self) -> dict[str, str]:
        """Name -> the first line of the member's docstring (what listings print)."""
        return {n: _first_line(m) for n, m in self.items()}


def _first_line(member: Any) -> str:
    """The docstring's first paragraph as one line (a summary wrapped over two lines reads as one)."""
    doc = getattr(member, "__doc__", None) or ""
    paragraph = doc.strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


# --------------------------------------------------------------------------- search spaces

SPACES: Registry[Callable[..., Any]] = Registry("search space")
register_space = SPACES.register


def create_space(name: str, **kwargs: Any) -> Any:
    """Build a registered space (``timm:<model>`` and other prefix families included); unknown names list the
    known ones."""
    return SPACES.get(name)(**kwargs)


def list_spaces() -> dict[str, str]:
    """Space name -> one-line description (prefix families such as ``timm:<model>`` are not listed)."""
    return SPACES.describe()
