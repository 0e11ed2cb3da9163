"""Cutting a group into messages that fit Feishu's limits: parts of about equal weight,
and an alert too big on its own with its longest values shortened, visibly.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Mapping

from ..errors import TemplateError
from ..limits import CUSTOM_BOT_BUDGET, MAX_COMPONENTS, Budget
from ..model import Alert
from .check import Measured, body_size

TRUNCATED = "…(truncated)"
# An alert that does not fit alone has every longer value cut to these lengths in turn.
SHORTEN_STEPS = (4096, 1024, 256, 64)
# Splitting aims below the limits, so that the estimated parts usually fit first time.
_SPLIT_FILL = 0.85
# A group of more than twice this many alerts is first sized from a sample this big.
_SAMPLE = 16
# A shortened alert's own silence link would match nothing; this one is dropped as unsafe.
_NO_LINK = "about:blank"

# Renders some alerts as one message titled with the part ("2/3", or ""), measured.
Build = Callable[[list[Alert], str], Measured]
Shorten = Callable[[Alert, int], Alert]


def _fits(measured: tuple[float, float], budget: Budget) -> bool:
    return measured[0] <= budget.bytes and measured[1] <= MAX_COMPONENTS


def cut_to_size(alerts: list[Alert], build: Build, shorten: Shorten, name: str,
                budget: Budget = CUSTOM_BOT_BUDGET) -> list[dict]:
    """Messages for `alerts` in order, each within the limits, every alert in exactly one.

    Starts from the whole group, or from the parts a sample says it needs (_first_cut),
    and renders each with part "i/k". A message still too big is cut again by its measured
    size and, since that changes every title's "/N", all parts are rendered once more. So
    a group is rendered about once or twice in all, never once per alert.
    """
    weights = {id(alert): _weight(alert) for alert in alerts}
    groups = _first_cut(list(alerts), build, weights, budget)
    while True:
        count = len(groups)
        messages, regrouped = [], []
        for i, group in enumerate(groups, 1):
            part = f"{i}/{count}" if count > 1 else ""
            message, measured = build(group, part)
            if _fits(measured, budget):
                regrouped.append(group)
                messages.append(message)
            elif len(group) > 1:
                regrouped.extend(_partition(group, _pieces(measured, len(group), budget), weights))
            else:
                alert, message = _fit_alone(group, part, build, shorten, name, budget)
                regrouped.append([alert])
                messages.append(message)
        if len(regrouped) == count:
            return messages
        groups = regrouped


def _first_cut(alerts: list[Alert], build: Build, weights: Mapping[int, int], budget: Budget) -> list[list[Alert]]:
    """The whole group; or, when a rendered sample shows it is too big for one message, the
    parts its estimated size asks for, so that a big group is not rendered whole in vain."""
    if len(alerts) <= 2 * _SAMPLE:
        return [alerts]
    sample = alerts[:: len(alerts) // _SAMPLE][:_SAMPLE]
    # Two renders tell a message's own size from what each alert adds to it.
    # Exact sizes: a bound (see check.sized) would skew the estimate.
    (one, (_, components_one)), (every, (_, components_all)) = build(sample[:1], ""), build(sample, "")
    size_one, size_all = body_size(one, budget=budget), body_size(every, budget=budget)
    weight_one, weight_all = weights[id(sample[0])], sum(weights[id(a)] for a in sample)
    per_weight = max(0, size_all - size_one) / max(1, weight_all - weight_one)
    per_alert = max(0, components_all - components_one) / (len(sample) - 1)
    estimated = (size_one + per_weight * (sum(weights[id(a)] for a in alerts) - weight_one),
                 components_one + per_alert * (len(alerts) - 1))
    return [alerts] if _fits(estimated, budget) else _partition(alerts, _pieces(estimated, len(alerts), budget), weights)


def _pieces(measured: tuple[float, float], alerts: int, budget: Budget) -> int:
    size, components = measured
    wanted = max(2, math.ceil(size / (budget.bytes * _SPLIT_FILL)),
                 math.ceil(components / (MAX_COMPONENTS * _SPLIT_FILL)))
    return min(alerts, wanted)


def _weight(alert: Alert) -> int:
    # Roughly what an alert adds to a message, to cut a group where its parts weigh the same:
    # the length of its names, values and links (joined: one call instead of one per string).
    labels, notes = alert.labels, alert.annotations
    return 200 + len("".join([*labels, *labels.values(), *notes, *notes.values(), alert.value_string,
                              alert.generator_url, alert.silence_url, alert.dashboard_url, alert.panel_url]))


def _partition(group: list[Alert], pieces: int, weights: Mapping[int, int]) -> list[list[Alert]]:
    """`group` cut into at most `pieces` runs of about equal weight, order kept."""
    total = sum(weights[id(a)] for a in group)
    runs: list[list[Alert]] = [[] for _ in range(pieces)]
    done = 0
    for alert in group:
        weight = weights[id(alert)]
        runs[min(pieces - 1, int((done + weight / 2) * pieces / total))].append(alert)
        done += weight
    runs = [r for r in runs if r]
    if len(runs) == 1:  # one alert outweighs the rest: halve by count instead
        half = len(group) // 2
        runs = [group[:half], group[half:]]
    return runs


def _fit_alone(group: list[Alert], part: str, build: Build, shorten: Shorten, name: str,
               budget: Budget) -> tuple[Alert, dict]:
    """An alert too big for a message on its own, with its longest values cut until it fits."""
    if not group:
        raise TemplateError(name, "the message is over Feishu's limits with no alert in it")
    measured = (0, 0)
    for length in SHORTEN_STEPS:
        alert = shorten(group[0], length)
        message, measured = build([alert], part)
        if _fits(measured, budget):
            return alert, message
    raise TemplateError(name, f"one alert needs {measured[0]} bytes and {measured[1]} components even with its "
                              f"values cut to {SHORTEN_STEPS[-1]} characters (limits: {budget.bytes}, {MAX_COMPONENTS})")


def shortened(silence: Callable[[Alert], str], alert: Alert, length: int) -> Alert:
    """The alert with every label and annotation value over `length` characters cut, visibly;
    `silence` gives its silence link (the render's links.SilenceLinks)."""
    def cut(value: str) -> str:
        return value if len(value) <= length else value[:length] + TRUNCATED

    return replace(
        alert,
        labels={k: cut(v) for k, v in alert.labels.items()},
        annotations={k: cut(v) for k, v in alert.annotations.items()},
        value_string=cut(alert.value_string),
        # The cut labels would make a silence that matches nothing: keep the real one.
        silence_url=silence(alert) or _NO_LINK,
    )
