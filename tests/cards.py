"""What a reader of a rendered message sees, for the rendering tests (test_render.py and
test_render_properties.py)."""

from __future__ import annotations

import re

# Keys whose string values Feishu shows (and searches for a bot's keywords).
SHOWN_KEYS = ("content", "text", "title")


def strings(node: object) -> list[str]:
    """Every string anywhere in a message's JSON, in order."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def shown_text(node: object, *, cards: bool) -> str:
    """The visible text under node (a message or a list of them), with our mention breaker
    undone and, for cards (whose markdown shows &#NN; as the character), the escapes too."""
    found: list[str] = []

    def walk(item: object) -> None:
        if isinstance(item, dict):
            for key, value in item.items():
                if key in SHOWN_KEYS and isinstance(value, str):
                    found.append(value)
                walk(value)
        elif isinstance(item, list):
            for value in item:
                walk(value)

    walk(node)
    text = "\n".join(found)
    if cards:
        text = re.sub(r"&#(\d+);", lambda m: chr(int(m.group(1))), text)
    return text.replace("<\u2060", "<")
