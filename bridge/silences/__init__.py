"""Silences in Alertmanager (API v2) and in Grafana's Alertmanager: create and expire, each
call with a deadline, never raising anything but SilenceError (whose words a toast shows).

    POST   {url}/api/v2/silences            {"matchers": [...], "startsAt", "endsAt", "createdBy",
                                             "comment"} -> {"silenceID": "..."}
    DELETE {url}/api/v2/silence/{id}        expire it

Grafana-managed alerts live in Grafana's own Alertmanager, the same API under
/api/alertmanager/grafana, with a service-account token (`actions.grafana`). An
Alertmanager is found by the notification's externalURL: `actions.alertmanagers` maps it to
the address and credentials the bridge should use (externalURL is often a public name the
bridge cannot reach); unmapped, the externalURL itself is used, without credentials.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping
from urllib.parse import quote

import requests

from ..config import ActionsConfig, SilenceTarget

GRAFANA_API = "/api/alertmanager/grafana/api/v2"
ALERTMANAGER_API = "/api/v2"


class SilenceError(Exception):
    """A silence could not be made or expired; str() says why in words for the person who
    tapped (no URL credentials, no token)."""


class SilenceGone(SilenceError):
    """Expiring: Alertmanager does not know the silence (expired and garbage-collected, or
    deleted by hand). Alertmanager 0.2x answers 500 "silence not found", later ones 404."""


@dataclass(frozen=True)
class Where:
    """Where one group's silences go, and the page a silence is shown on."""

    api: str                  # base of the API: ...{ALERTMANAGER_API} or ...{GRAFANA_API}
    headers: Mapping[str, str]
    page: str                 # the externalURL the people in the chat can open
    grafana: bool

    def silence_url(self, silence_id: str) -> str:
        if not self.page:
            return ""
        if self.grafana:
            return f"{self.page}/alerting/silence/{quote(silence_id)}/edit"
        return f"{self.page}/#/silences/{quote(silence_id)}"


class Silences:
    def __init__(self, config: ActionsConfig, *, session: requests.Session | None = None):
        self._config = config
        self._session = session if session is not None else requests.Session()

    def where(self, source: str, external_url: str) -> Where:
        """Raises SilenceError when the group's source has nowhere configured to silence it."""
        page = external_url.rstrip("/")
        if source == "grafana":
            grafana = self._config.grafana
            if grafana is None:
                raise SilenceError("Grafana alerts need actions.grafana (its URL and a service-account token) "
                                   "in the bridge's config")
            return Where(grafana.url + GRAFANA_API, _auth(grafana), page or grafana.url, True)
        for target in self._config.alertmanagers:
            if target.external_url == page:
                return Where(target.url + ALERTMANAGER_API, _auth(target), page, False)
        if not page.startswith(("http://", "https://")):
            raise SilenceError("the alert has no Alertmanager URL (externalURL) to silence it in")
        return Where(page + ALERTMANAGER_API, {}, page, False)

    def create(self, where: Where, matchers: Mapping[str, str], starts: float, ends: float, created_by: str,
               comment: str, *, timeout: float | None = None) -> str:
        """The new silence's id. One equality matcher per label: exactly this group."""
        body = {"matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True}
                             for k, v in sorted(matchers.items())],
                "startsAt": _iso(starts), "endsAt": _iso(ends), "createdBy": created_by, "comment": comment}
        answer = self._call("POST", where, "/silences", body, timeout)
        try:
            silence_id = answer.json()["silenceID"]
        except (ValueError, KeyError, TypeError):
            raise SilenceError("Alertmanager answered, but not with a silence id") from None
        if not isinstance(silence_id, str) or not silence_id:
            raise SilenceError("Alertmanager answered, but not with a silence id")
        return silence_id

    def expire(self, where: Where, silence_id: str, *, timeout: float | None = None) -> None:
        self._call("DELETE", where, f"/silence/{quote(silence_id, safe='')}", None, timeout)

    def _call(self, method: str, where: Where, path: str, body: dict | None, timeout: float | None) -> requests.Response:
        """`timeout`: what is left of the tap's time, if less than actions.timeout."""
        name = "Grafana" if where.grafana else "Alertmanager"
        wait = min(self._config.timeout, timeout) if timeout is not None else self._config.timeout
        try:
            answer = self._session.request(method, where.api + path, json=body, headers=dict(where.headers),
                                           timeout=wait, allow_redirects=False)
        except requests.Timeout:
            raise SilenceError(f"{name} did not answer within {wait:.1f}s") from None
        except requests.RequestException:
            raise SilenceError(f"{name} could not be reached") from None
        if answer.status_code in (401, 403):
            raise SilenceError(f"{name} refused the bridge's credentials (HTTP {answer.status_code})")
        if method == "DELETE" and (answer.status_code == 404 or "not found" in answer.text[:200].lower()):
            raise SilenceGone(f"{name} does not know this silence any more")
        if not 200 <= answer.status_code < 300:
            raise SilenceError(f"{name} refused: HTTP {answer.status_code} {_reason(answer)}".rstrip())
        return answer


def _auth(target: SilenceTarget) -> dict[str, str]:
    if target.bearer_token is not None:
        return {"Authorization": f"Bearer {target.bearer_token.reveal()}"}
    if target.basic_username and target.basic_password is not None:
        pair = f"{target.basic_username}:{target.basic_password.reveal()}".encode("utf-8")
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return {}


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _reason(answer: requests.Response) -> str:
    """Alertmanager's words for a refusal (a short text or JSON), cut short."""
    text = answer.text.strip().replace("\n", " ")
    return f"({text[:120]})" if text else ""
