"""Screening chunks for text aimed at a language model rather than at an engineer.

A runbook is reference data. Text inside it that tries to instruct a model ("ignore
previous instructions", "you are now ...", "reveal the system prompt") or that would
exfiltrate data through a rendered image (a markdown image on an outside host with
data in its URL) has no place in an index whose passages may later reach a prompt.
Chunks that carry such text are quarantined (not indexed) unless their document is
allow-listed, and the build report lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "override instructions",
        re.compile(
            r"\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+|the\s+|your\s+)*"
            r"(?:previous|prior|above|earlier|preceding|system|original)\s+"
            r"(?:instructions?|prompts?|rules|directions|context|messages?)",
            re.I,
        ),
    ),
    (
        "role change",
        re.compile(
            r"\byou\s+are\s+now\s+(?:no\s+longer|acting\s+as|DAN\b|jailbroken|unrestricted|uncensored|free\s+of"
            r"|in\s+(?:developer|god|jailbreak|unrestricted|admin)\s+mode"
            r"|an?\s+(?:AI|assistant|language\s+model|chatbot|different|new|unrestricted|uncensored|evil)\b)",
            re.I,
        ),
    ),
    (
        "prompt extraction",
        re.compile(
            r"\b(?:reveal|print|show|repeat|output|leak|disclose)\s+(?:me\s+)?(?:the\s+|your\s+)?"
            r"(?:system|hidden|initial|original)\s+(?:prompt|instructions?|message)",
            re.I,
        ),
    ),
    (
        "model directive",
        re.compile(
            r"\b(?:as\s+an?\s+(?:AI|LLM|language\s+model|assistant)|(?:AI|LLM)\s+assistants?\s+(?:must|should))"
            r"\b.{0,60}\b(?:must|should|will|always|never)\b",
            re.I,
        ),
    ),
    (
        "chat template token",
        re.compile(r"<\|(?:im_start|im_end|system|endoftext)\|>|\[/?INST\]|<</?SYS>>", re.I),
    ),
    # ![x](https://host/path?data=...) : a rendered image that carries data to a host in its query.
    (
        "exfiltration image",
        re.compile(r"!\[[^\]]*\]\(\s*<?https?://[^\s)>]+\?[^\s)>]*=[^\s)>]*>?\s*\)", re.I),
    ),
)


@dataclass(frozen=True, slots=True)
class Flag:
    """Why a passage was quarantined (the rule's name, never the passage)."""

    rule: str


def screen(text: str) -> Flag | None:
    """The first instruction-like pattern found in ``text``, or None."""
    for name, pattern in _PATTERNS:
        if pattern.search(text):
            return Flag(name)
    return None
