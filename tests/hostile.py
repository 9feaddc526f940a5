"""Hostile input, shared by the property tests (hypothesis strategies) and the regression corpus.

Every failure hypothesis ever found stays here as a named case (`CORPUS`), the deep nesting first.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from tests.factories import raw_event

# Named cases: each broke (or nearly broke) a phase once; all must be quarantined or dead-lettered.
CORPUS: dict[str, bytes] = {
    "100k open brackets (RecursionError in etl)": b"[" * 100_000,
    "50k nested objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "deep array inside a valid event": json.dumps(raw_event(event_id="deep-1", order__device=None))
    .encode()
    .replace(b'"device": null', b'"device": ' + b"[" * 5000 + b"]" * 5000),
    "deep array in an unknown key": json.dumps(raw_event(event_id="deep-2"))[:-1].encode()
    + b', "extra": '
    + b"[" * 200
    + b"]" * 200
    + b"}",
    "not UTF-8": b'{"event_id": "\xff\xfe", "order": {}}',
    "lone surrogate": json.dumps(raw_event(event_id="sur-1"))
    .encode()
    .replace(b'"fashion"', b'"fash\\ud800ion"'),
    "NUL in a text": json.dumps(raw_event(event_id="nul-1", order__channel="se\u0000o")).encode(),
    "escape character in an id": json.dumps(raw_event(event_id="esc\u001b[31m")).encode(),
    "3 MB category": json.dumps(
        raw_event(event_id="big-1", order__main_category="x" * 3_000_000)
    ).encode(),
    "long device": json.dumps(raw_event(event_id="long-1", order__device="d" * 33)).encode(),
    "byte-order mark inside the file": "\ufeff".encode()
    + json.dumps(raw_event(event_id="bom-2")).encode(),
    "infinite amount": json.dumps(raw_event(event_id="inf-1"))
    .encode()
    .replace(b'"basket_value": 120.5', b'"basket_value": 1e999'),
    "huge amount": json.dumps(raw_event(event_id="huge-1", order__basket_value=1e300)).encode(),
    "a number as event_time": json.dumps(
        raw_event(event_id="epoch-1", event_time=1700000000)
    ).encode(),
    "JSON array": b"[1, 2, 3]",
    "truncated object": b'{"event_id": "trunc-1", "order": {',
    "carriage return only": b"\r",
    # found by `make fuzz`: gzip's magic bytes opening a text file made the whole file unreadable
    "gzip magic bytes opening a text file": b"\x1f\x8b",
}

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
LEAVES = (
    "event_id",
    "event_time",
    "order_id",
    "customer.customer_id",
    "customer.country",
    *(f"order.{name}" for name in ("device", "channel", "main_category", "n_items")),
    *(f"order.{name}" for name in ("basket_value", "shipping_fee", "discount", "order_total")),
    "order.is_returned",
)


def _nested(depth: int, kind: str) -> bytes:
    return (
        (b"[" * depth + b"]" * depth)
        if kind == "array"
        else (b'{"a":' * depth + b"0" + b"}" * depth)
    )


@st.composite
def broken_events(draw: Any) -> bytes:
    """A valid event with one leaf replaced by any JSON value, keys dropped or added."""
    event = raw_event(event_id=f"broken-{draw(st.integers(0, 10**9))}")
    leaf = draw(st.sampled_from(LEAVES))
    holder: dict[str, Any] = event
    *parents, name = leaf.split(".")
    for parent in parents:
        holder = holder[parent]
    action = draw(st.sampled_from(["replace", "drop", "add"]))
    if action == "replace":
        holder[name] = draw(JSON_VALUES)
    elif action == "drop":
        holder.pop(name, None)
    else:
        event[draw(st.text(min_size=1, max_size=8))] = draw(JSON_VALUES)
    return json.dumps(event, allow_nan=True).encode()


HOSTILE_LINES = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ")),
    JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.builds(_nested, st.integers(50, 20_000), st.sampled_from(["array", "object"])),
    broken_events(),
    st.sampled_from(list(CORPUS.values())),
)

# Messages that can never be a valid event: the consumer must dead-letter every one of them.
POISON_MESSAGES = st.one_of(
    st.binary(max_size=200).filter(lambda b: b"order" not in b),
    JSON_VALUES.filter(lambda v: not isinstance(v, dict)).map(
        lambda v: json.dumps(v, allow_nan=True).encode()
    ),
    st.builds(_nested, st.integers(50, 20_000), st.sampled_from(["array", "object"])),
)
