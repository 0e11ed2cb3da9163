"""Moved to bridge.delivery.pacing (pacing and retry backoff belong to the sender)."""

# MERGE-SHIM: old import path; the merge updates the importers and deletes this module.
from .delivery.pacing import EDGE_SLACK, MINUTE, SECOND, backoff, next_allowed  # noqa: F401
