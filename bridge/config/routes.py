"""`route:`, the route tree, with Alertmanager's inheritance applied as it is read."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .bots import Users, mention_settings
from .reader import Reader, kind
from .types import Route

_ROUTE_KEYS = {"bots", "matchers", "continue", "routes", "mentions", "mention_labels", "mention_on",
               "send_resolved"}


def read_route(r: Reader, raw: Any, path: str, *, parent: Route, known: set[str], users: Users,
               root: bool = False) -> Route:
    """One node and its subtree. `known` are the configured bot names; when no bot could
    be read it is empty, and bot names are not checked (each would be "unknown")."""
    if raw is None and root:
        r.problem(path, "required: the route tree's root names the bots alerts go to by default")
        return Route()
    section = r.mapping(raw, path, _ROUTE_KEYS)
    if root:
        for key in ("matchers", "continue"):
            if key in section:
                r.problem(f"{path}.{key}", "not allowed on the root route (every alert enters at the root)")
    bots = parent.bots
    if section.get("bots") is not None:
        bots = tuple(r.string_list(section["bots"], f"{path}.bots"))
        for i, bot in enumerate(bots):
            if bot not in known and known:
                r.problem(f"{path}.bots[{i}]", f"unknown bot {bot!r} (known: {', '.join(sorted(known))})")
    if root and not bots:
        r.problem(f"{path}.bots", "required on the root route: where alerts go when no child route matches")
    # Built before its children, which inherit from it; they are added afterwards.
    here = Route(
        matchers=r.matchers(section.get("matchers"), f"{path}.matchers"),
        bots=bots,
        continue_=False if root else r.boolean(section.get("continue"), f"{path}.continue", False),
        **mention_settings(r, section, path, inherited=parent, users=users),
    )
    children_raw = section.get("routes")
    if children_raw is not None and not isinstance(children_raw, list):
        r.problem(f"{path}.routes", f"expected a list of routes, got {kind(children_raw)}")
    elif children_raw:
        children = tuple(read_route(r, child, f"{path}.routes[{i}]", parent=here, known=known, users=users)
                         for i, child in enumerate(children_raw))
        here = replace(here, routes=children)
    return here
