"""The Jinja2 sandbox templates render in: what they can read, the `finalize` that writes
every expression as one JSON literal, the filters they can call, and the per-Renderer
caches behind those filters.

Jinja2 internals used here (pyproject bounds Jinja2 below 4 for them): the sandbox's
getattr/getitem overridden for a fast path, and jinja2.filters.sync_do_select,
sync_do_join and sync_do_list called directly. links.SilenceLinks sets the sandbox's
per-callable attributes.
"""

from __future__ import annotations

import json
from dataclasses import fields as dataclass_fields
from datetime import datetime
from functools import lru_cache, partial
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

import jinja2
from jinja2.filters import sync_do_join, sync_do_list, sync_do_select
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..model import Alert, Mention, Notification
from .escape import MENTION, NO_MENTION, md_escape, plain, utf8_safe
from .filters import format_duration, labels_compact, md_fields, truncate_text, without
from .links import URL_MAX_CHARS, md_link, safe_url
from .state import BotView, ago_filter, at_filter, links_filter, md_links_filter, time_filter

# md remembers this many values of up to this many characters (per Renderer).
_MD_CACHE_ENTRIES = 1024
_MD_CACHE_CHARS = 200
_LINK_CACHE_ENTRIES = 256


class Environment(ImmutableSandboxedEnvironment):
    """A missing label or annotation reads as "" (as in Alertmanager's Go templates, where
    an absent label is ""), since alerts differ in which they carry; any other undefined
    name or attribute is an error (StrictUndefined), so a typo fails check-config.

    Immutable: a template cannot change what it is given (`alert.labels.clear()`), which
    the other bots' messages and the other parts of a split message render from too."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Fast paths for what templates read most, thousands of times per render: the
        # model's frozen records hold only data, and a label map's keys are data too.
        kind = type(obj)
        if kind is dict or kind is MappingProxyType:
            if attribute not in _MAP_ATTRIBUTES:
                return obj.get(attribute, "")
        elif attribute in (_ALERT_ATTRIBUTES if kind is Alert else _RECORD_ATTRIBUTES.get(kind, ())):
            return getattr(obj, attribute)
        value = super().getattr(obj, attribute)
        return "" if isinstance(value, jinja2.Undefined) and isinstance(obj, Mapping) else value

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        return "" if isinstance(value, jinja2.Undefined) and isinstance(obj, Mapping) else value


# A map's own methods (items, keys...) stay reachable; any other name reads as a key.
_MAP_ATTRIBUTES = frozenset(dir(dict)) | frozenset(dir(MappingProxyType))


def _public_attributes(kind: type) -> frozenset[str]:
    return frozenset(n for n in [*dir(kind), *(f.name for f in dataclass_fields(kind))] if not n.startswith("_"))


# What a template may read of the model's records: their fields, properties and methods.
_RECORD_ATTRIBUTES: Mapping[type, frozenset[str]] = MappingProxyType(
    {kind: _public_attributes(kind) for kind in (Alert, Notification, Mention, BotView)})
_ALERT_ATTRIBUTES = _RECORD_ATTRIBUTES[Alert]  # read most, so found without a lookup


def _json_default(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises the UndefinedError naming what is missing
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    hint = "; format it with the `time` filter" if isinstance(value, datetime) else ""
    raise TypeError(f"a {type(value).__name__} cannot be written as JSON{hint}")


def _to_json(value: Any) -> str:
    """`finalize`: every {{ expression }} becomes one JSON literal, with mentions neutralised."""
    if type(value) is str:  # most values: plain() inline, and json.dumps' own text, sooner
        if not value.isascii():
            value = utf8_safe(value)
        return encode_basestring(MENTION.sub(NO_MENTION, value) if "<" in value else value)
    return json.dumps(plain(value), ensure_ascii=False, allow_nan=False, default=_json_default)


def environment(search_path: list[Path], timezone: ZoneInfo, clock: Callable[[], float]) -> Environment:
    env = Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search_path]),  # first directory wins
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_to_json,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    md = _cached_md()
    link, safe = _cached_links(md)
    env.filters.update(
        md=md,
        # Those with the context passed find the render's own values there (state.RenderState).
        time=jinja2.pass_context(partial(time_filter, timezone)),
        ago=jinja2.pass_context(partial(ago_filter, clock)),
        duration=format_duration,
        truncate_text=truncate_text,
        labels_compact=labels_compact,
        without=without,
        safe_url=safe,
        md_link=link,  # a filter, not a function: Jinja calls filters several times faster
        links=jinja2.pass_context(partial(links_filter, safe)),
        md_links=jinja2.pass_context(partial(md_links_filter, link, partial(md_link, md), safe)),
        md_fields=partial(md_fields, md),
        at=jinja2.pass_context(partial(at_filter, "card", md)),
        at_text=jinja2.pass_context(partial(at_filter, "text", md)),
        # Jinja's own, minus the switch to async templates that this environment never uses:
        # templates call them thousands of times per render.
        select=_select,
        join=_join,
        list=sync_do_list,
    )
    return env


def _cached_md() -> Callable[[Any], str]:
    """md_escape, remembering short values: a render escapes the same alertname, severity and
    link texts for every alert. Long values are escaped each time, to bound the memory."""
    cached = lru_cache(maxsize=_MD_CACHE_ENTRIES)(md_escape)

    def md(value: Any) -> str:
        return cached(value) if type(value) is str and len(value) <= _MD_CACHE_CHARS else md_escape(value)
    return md


def _cached_links(md: Callable[[Any], str]) -> tuple[Callable[[Any, Any], str], Callable[[Any], str]]:
    """md_link and safe_url, remembering recent links: a group's alerts mostly share their
    rule's source and runbook links. Only URLs up to URL_MAX_CHARS long are remembered, so
    the memory stays bounded.

    The one cache of safe_url: the filter, `links` and `alert | md_links` all use it. A
    check costs 0.35-0.45 us uncached and 0.07-0.09 us here (timeit, 40-80 character URLs):
    with bench/render.py's 1000 alerts (two links each) the text and legacy templates
    render 1-2 ms (about 3%) sooner than with safe_url uncached. A per-render cache on top
    of this one, as there was, saved a further 0.02 us a call: not measurable.
    """
    cached_link = lru_cache(maxsize=_LINK_CACHE_ENTRIES)(partial(md_link, md))
    cached_safe = lru_cache(maxsize=_LINK_CACHE_ENTRIES)(safe_url)

    def link(url: Any, text: Any) -> str:
        if type(url) is str and type(text) is str and len(url) <= URL_MAX_CHARS:
            return cached_link(url, text)
        return md_link(md, url, text)

    def safe(url: Any) -> str:
        return cached_safe(url) if type(url) is str and len(url) <= URL_MAX_CHARS else safe_url(url)
    return link, safe


@jinja2.pass_context
def _select(context: Context, value: Any, *args: Any, **kwargs: Any) -> Iterable[Any]:
    if args or kwargs:
        return sync_do_select(context, value, *args, **kwargs)
    return (item for item in value if item)


@jinja2.pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    if attribute is None and not eval_ctx.autoescape:
        return str(d).join(map(str, value))
    return sync_do_join(eval_ctx, value, d, attribute)
