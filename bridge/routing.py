"""The route tree, evaluated with Alertmanager's semantics (dispatch/route.go).

The tree itself (config.Route) is built, with inheritance applied, when the config
loads; its matchers are the matcher language of bridge.matchers. This module only
walks it: which routes, and so which bots, an alert's labels reach.
"""

from __future__ import annotations

from typing import Mapping

from .config import Route


def match(route: Route, labels: Mapping[str, str]) -> list[Route]:
    """The matching routes under `route`, depth-first, left to right (Route.Match)."""
    if not all(m.matches(labels) for m in route.matchers):
        return []
    matched: list[Route] = []
    for child in route.routes:
        found = match(child, labels)
        matched.extend(found)
        if found and not child.continue_:
            break
    # A node whose children all missed is itself the match: the parent is the catch-all.
    return matched or [route]


def route_matches(root: Route, labels: Mapping[str, str]) -> list[tuple[str, Route]]:
    """(bot, matched route) for every matched route and each of its bots, in order.

    A bot appears once per route that sends the alert to it; the route nodes carry the
    settings (mentions, send_resolved) that apply to the alert on that bot.
    """
    return [(bot, route) for route in match(root, labels) for bot in dict.fromkeys(route.bots)]


def routes_by_bot(root: Route, labels: Mapping[str, str]) -> dict[str, tuple[Route, ...]]:
    """The bots an alert goes to, in order, each with the matched routes that send it there."""
    found: dict[str, list[Route]] = {}
    for bot, route in route_matches(root, labels):
        found.setdefault(bot, []).append(route)
    return {bot: tuple(routes) for bot, routes in found.items()}
