"""Series identity: the canonical label string every backend keys series by."""

from __future__ import annotations

import re

# \Z, not $: "$" also matches before a trailing newline.
METRIC_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,127}\Z")
LABEL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}\Z")
MAX_LABELS = 16
MAX_LABEL_VALUE = 256


def canonical_labels(labels: dict[str, str]) -> str:
    """``k=v`` pairs sorted by key and joined by ``,``; values may not contain ``,`` or ``=`` (checked upstream)."""
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def label_pairs(labels: str) -> dict[str, str]:
    if not labels:
        return {}
    return dict(pair.split("=", 1) for pair in labels.split(","))


def matches_labels(labels: str, wanted: dict[str, str]) -> bool:
    if not wanted:
        return True
    have = label_pairs(labels)
    return all(have.get(key) == value for key, value in wanted.items())
