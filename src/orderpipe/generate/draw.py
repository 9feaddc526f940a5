"""Every random number of a run: the run's plan (unit sizes, where each unit's times fall, its
copies and bad lines) and each unit's own draws, from streams keyed by the run and the unit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from orderpipe.generate.dirt import Dirt
from orderpipe.generate.world import (
    CATEGORY_ITEMS,
    CATEGORY_SHARE,
    CHANNEL_SHARE,
    COUNTRY_SHARE,
    DEVICE_SHARE,
    HOUR_WEIGHTS,
    effect,
)

DAY_US, HOUR_US = 86_400_000_000, 3_600_000_000
HOUR_CDF = np.concatenate([[0.0], np.cumsum(HOUR_WEIGHTS) / HOUR_WEIGHTS.sum()])
COPY_DELAY_US = (1_000_000, 3_600_000_000)  # a re-sent or corrected event follows within an hour
CUSTOMER_SALT = {"country": 0x5C0FFEE, "device": 0xDE71CE}


@dataclass(frozen=True)
class Plan:
    """What is drawn once for the whole run: unit sizes, where each unit's times fall, and how
    many copies and bad lines each unit gets."""

    key: tuple[int, ...]
    events: int
    start_us: int
    days: int
    customers: int
    offsets: np.ndarray  # first event of each unit (units + 1 entries)
    spans: np.ndarray  # per unit: the Gamma-distributed sum of its exponential spacings
    prefix: np.ndarray  # per unit: the spacings before it
    total: float  # every spacing, the one after the last event included
    copies: np.ndarray  # per unit: duplicate lines
    bad: np.ndarray  # per unit: bad lines
    duplicates: int

    @property
    def units(self) -> int:
        return len(self.spans)

    @classmethod
    def make(
        cls, events: int, seed: int, start: datetime, days: int, dirt: Dirt, *, unit: int
    ) -> Plan:
        """The plan of `events` events in units of `unit` events (the last one shorter)."""
        start_us = round(start.timestamp() * 1_000_000)
        key = (seed, start.toordinal(), start_us % DAY_US, days, events)
        rng = np.random.default_rng(np.random.SeedSequence(key))
        sizes = np.full(-(-events // unit), unit, dtype=np.int64)
        sizes[-1] = events - unit * (len(sizes) - 1)
        # The i-th of n sorted uniforms is S_i / S_(n+1), S the running sum of n + 1 exponential
        # spacings. A unit's spacings sum to a Gamma(size) draw made here; the unit draws their
        # shares itself. Times are then in order across units, whatever unit makes them.
        spans = rng.standard_gamma(sizes.astype(float))
        total = float(spans.sum() + rng.standard_exponential())
        share = sizes / events
        duplicates = events // 50 if dirt.duplicates is None else dirt.duplicates
        return cls(
            key=key,
            events=events,
            start_us=start_us,
            days=days,
            customers=max(10, events // 6),
            offsets=np.concatenate([[0], np.cumsum(sizes)]),
            spans=spans,
            prefix=np.concatenate([[0.0], np.cumsum(spans)[:-1]]),
            total=total,
            copies=rng.multinomial(duplicates, share),
            bad=rng.multinomial(dirt.bad_lines, share),
            duplicates=duplicates,
        )

    @property
    def run_tag(self) -> str:
        """Six hex digits naming the run (seed, start, days, events): order ids of two runs
        differ even when their days overlap; the same run again gives the same ids."""
        return f"{int(np.random.SeedSequence(self.key).generate_state(1)[0]) & 0xFFFFFF:06x}"

    def rng(self, unit: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.key, spawn_key=(unit,)))


def draw_unit(plan: Plan, unit: int, dirt: Dirt) -> dict[str, Any]:
    """Every random number of one unit, in a fixed order, from the unit's own stream."""
    rng = plan.rng(unit)
    n = int(plan.offsets[unit + 1] - plan.offsets[unit])
    spacing = np.cumsum(rng.standard_exponential(n))
    position = (plan.prefix[unit] + spacing / spacing[-1] * plan.spans[unit]) / plan.total
    customer = customer_numbers(rng.random(n), plan.customers)
    preferred = hashed_choice(customer, DEVICE_SHARE, CUSTOMER_SALT["device"])
    drawn: dict[str, Any] = {
        "event_us": plan.start_us + time_of(position, plan.days),
        "customer": customer,
        "country": hashed_choice(customer, COUNTRY_SHARE, CUSTOMER_SALT["country"]),
        "device": np.where(rng.random(n) < 0.7, preferred, choice(rng, DEVICE_SHARE, n)),
        "channel": choice(rng, CHANNEL_SHARE, n),
        "category": choice(rng, CATEGORY_SHARE, n),
    }
    drawn["poisson"] = rng.poisson(effect(CATEGORY_ITEMS, CATEGORY_SHARE, drawn["category"]))
    drawn["price"] = rng.lognormal(0.0, 0.45, n)
    drawn["discount_draw"] = rng.random(n)
    drawn["discount_share"] = rng.uniform(0.05, 0.25, size=n)
    drawn["return_draw"] = rng.random(n)
    drawn["id_bytes"] = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    for column, rate in (
        ("channel", dirt.missing_rate),
        ("device", dirt.missing_rate / 3),
        ("main_category", dirt.missing_rate / 3),
        ("country", dirt.missing_rate / 3),
    ):
        drawn[f"missing_{column}"] = rng.random(n) < rate
    for column in ("country", "device", "channel", "main_category"):
        drawn[f"style_{column}"] = np.where(
            rng.random(n) < dirt.untidy_rate, rng.integers(1, 5, size=n), 0
        )
    copies = int(plan.copies[unit])
    drawn["picks"] = {
        "index": rng.integers(0, n, size=copies),
        "correction": rng.random(copies) < 0.3,
        "delay": rng.integers(*COPY_DELAY_US, size=copies),
        "share": np.round(rng.uniform(0.05, 0.2, size=copies), 2),
    }
    drawn["bad"] = rng.integers(0, n, size=int(plan.bad[unit]))
    return drawn


def time_of(position: np.ndarray, days: int) -> np.ndarray:
    """Microseconds from the start for positions in [0, 1): days alike, hours by HOUR_WEIGHTS,
    uniform within the hour; a larger position is never an earlier time."""
    x = position * days
    day = np.minimum(np.floor(x), days - 1)
    fraction = np.clip(x - day, 0.0, 1.0)
    hour = np.clip(np.searchsorted(HOUR_CDF, fraction, side="right") - 1, 0, 23)
    within = (fraction - HOUR_CDF[hour]) / (HOUR_CDF[hour + 1] - HOUR_CDF[hour])
    micros = np.minimum((within * HOUR_US).astype(np.int64), HOUR_US - 1)
    return day.astype(np.int64) * DAY_US + hour * HOUR_US + micros


def customer_numbers(uniform: np.ndarray, customers: int) -> np.ndarray:
    """Customers 0..customers-1 with popularity ~ 1 / (i + 10)^0.9 (inverse of its CDF)."""
    low, high = 10**0.1, (customers + 10) ** 0.1
    numbers = np.floor((low + uniform * (high - low)) ** 10 - 10)
    return np.clip(numbers, 0, customers - 1).astype(np.int64)


def hashed_choice(numbers: np.ndarray, shares: dict[str, float], salt: int) -> np.ndarray:
    """Indices into `shares` fixed by each number (the same customer, the same country, in
    every run and with every seed)."""
    z = numbers.astype(np.uint64) + np.uint64(salt) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    uniform = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    weights = np.array(list(shares.values()))
    cumulative = np.cumsum(weights) / weights.sum()
    return np.minimum(np.searchsorted(cumulative, uniform, side="right"), len(weights) - 1)


def choice(rng: np.random.Generator, shares: dict[str, float], size: int) -> np.ndarray:
    """Indices into `shares` drawn with its weights."""
    weights = np.array(list(shares.values()))
    return rng.choice(len(weights), size=size, p=weights / weights.sum())
