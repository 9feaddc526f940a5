"""The synthetic world: shares of devices, channels, categories and countries (keyed by the
contract's vocabularies), prices and items per category, and the rule returns follow."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from orderpipe.core import schema


def keyed(vocabulary: tuple[str, ...], **values: float) -> dict[str, float]:
    """`values` keyed by `vocabulary`, in its order: a name missing or not in it fails."""
    if set(values) != set(vocabulary):
        raise ValueError(f"{sorted(values)} are not the vocabulary {list(vocabulary)}")
    return {name: values[name] for name in vocabulary}


# Shares and effects of the synthetic world. Returns follow a logistic rule on these effects.
DEVICE_SHARE = keyed(schema.DEVICES, mobile=0.55, desktop=0.35, tablet=0.10)
CHANNEL_SHARE = keyed(
    schema.CHANNELS, seo=0.30, sea=0.20, email=0.15, social=0.15, direct=0.12, affiliate=0.08
)
CATEGORY_SHARE = keyed(
    schema.CATEGORIES,
    fashion=0.24,
    electronics=0.14,
    home=0.14,
    beauty=0.12,
    sports=0.10,
    books=0.09,
    toys=0.08,
    grocery=0.09,
)
# Any two letters are a country to the contract (no vocabulary): these are the generator's own.
COUNTRY_SHARE = {
    "FR": 0.45,
    "BE": 0.10,
    "CH": 0.06,
    "DE": 0.10,
    "ES": 0.08,
    "IT": 0.08,
    "NL": 0.05,
    "LU": 0.02,
    "PT": 0.03,
    "GB": 0.03,
}
CATEGORY_PRICE = keyed(
    schema.CATEGORIES,
    fashion=35.0,
    electronics=120.0,
    home=45.0,
    beauty=18.0,
    sports=40.0,
    books=14.0,
    toys=22.0,
    grocery=6.0,
)
CATEGORY_ITEMS = keyed(
    schema.CATEGORIES,
    fashion=1.4,
    electronics=0.4,
    home=1.0,
    beauty=1.6,
    sports=0.8,
    books=1.2,
    toys=1.0,
    grocery=4.0,
)
RETURN_BASE = -2.3
RETURN_CATEGORY = keyed(
    schema.CATEGORIES,
    fashion=1.2,
    electronics=0.4,
    home=-0.2,
    beauty=-0.3,
    sports=0.3,
    books=-0.8,
    toys=0.0,
    grocery=-1.5,
)
RETURN_DEVICE = keyed(schema.DEVICES, mobile=0.35, desktop=0.0, tablet=0.1)
RETURN_CHANNEL = keyed(
    schema.CHANNELS, seo=0.0, sea=0.1, email=-0.2, social=0.5, direct=-0.3, affiliate=0.3
)
RETURN_SINGLE_ITEM = 0.45
RETURN_DISCOUNTED = 0.3
RETURN_PRICEY_ITEM = 0.25  # average price per item above 100
FREE_SHIPPING_FROM = 60.0
SHIPPING_FEE = 4.99
HOUR_WEIGHTS = np.array(
    [
        1,
        0.6,
        0.4,
        0.3,
        0.3,
        0.4,
        0.8,
        1.4,
        2.0,
        2.4,
        2.6,
        2.7,
        3.0,
        2.9,
        2.7,
        2.6,
        2.7,
        3.0,
        3.5,
        4.2,
        4.6,
        4.3,
        3.2,
        1.9,
    ]
)


def order_values(drawn: dict[str, Any]) -> dict[str, np.ndarray]:
    """Items, basket, shipping, discount (NaN: none) and total of the drawn orders, the true
    probability that each is returned (the logistic rule), and whether it is."""
    category, device, channel = drawn["category"], drawn["device"], drawn["channel"]
    n_items = (1 + drawn["poisson"]).clip(1, 20)
    unit_price = effect(CATEGORY_PRICE, CATEGORY_SHARE, category) * drawn["price"]
    basket = np.round(n_items * unit_price, 2)
    shipping = np.where(basket >= FREE_SHIPPING_FROM, 0.0, SHIPPING_FEE)
    promo_channel = np.isin(channel, [list(CHANNEL_SHARE).index(c) for c in ("email", "affiliate")])
    discounted = drawn["discount_draw"] < np.where(promo_channel, 0.45, 0.2)
    discount = np.where(discounted, np.round(basket * drawn["discount_share"], 2), np.nan)
    total = np.round(basket + shipping - np.nan_to_num(discount), 2)

    logit = (
        RETURN_BASE
        + effect(RETURN_CATEGORY, CATEGORY_SHARE, category)
        + effect(RETURN_DEVICE, DEVICE_SHARE, device)
        + effect(RETURN_CHANNEL, CHANNEL_SHARE, channel)
        + RETURN_SINGLE_ITEM * (n_items == 1)
        + RETURN_DISCOUNTED * discounted
        + RETURN_PRICEY_ITEM * (basket / n_items > 100)
    )
    proba = 1.0 / (1.0 + np.exp(-logit))
    return {
        "n_items": n_items.astype(np.int32),
        "basket_value": basket,
        "shipping_fee": shipping,
        "discount": discount,
        "order_total": total,
        "is_returned": (drawn["return_draw"] < proba).astype(np.int8),
        "return_proba": proba,
    }


def names(shares: dict[str, float], index: np.ndarray) -> pl.Series:
    """The names at `index` into `shares`."""
    return pl.Series(list(shares), dtype=pl.String).gather(index)


def effect(table: dict[str, float], shares: dict[str, float], index: np.ndarray) -> np.ndarray:
    """The values of `table` for the names at `index` into `shares`."""
    return np.array([table[name] for name in shares])[index]
