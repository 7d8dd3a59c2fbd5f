"""The model-input transform: order, encodings, missing values, request-time inputs, services,
and one-row == many-rows.

Most tests pin the spec to fraud_v1 (its layout is small and frozen); the fraud_v2 tests below
cover request-time inputs and serving a model through the service it was trained on."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from loopline.features.feast_ops import SERVICES
from loopline.features.transform import feature_names, model_inputs, to_numpy
from loopline.spec import load_spec

FRAUD = load_spec("fraud")
SPEC = FRAUD.model_copy(
    update={"features": FRAUD.features.model_copy(update={"service": "fraud_v1"})}
)
FEAST = SERVICES["fraud_v1"].features

EXPECTED_ORDER = [
    "amount",
    "merchant_category",
    "channel",
    "country",
    "hour",
    "cust_txn_count_1d",
    "cust_txn_count_7d",
    "cust_amount_sum_7d",
    "cust_amount_mean_30d",
    "cust_amount_max_30d",
    "cust_online_share_30d",
    "cust_distinct_countries_30d",
    "merch_txn_count_7d",
    "merch_amount_mean_30d",
    "merch_online_share_30d",
    "amount_to_cust_mean",
]


def _frame(n: int = 1, **overrides: list) -> pl.DataFrame:
    """n valid rows (request fields, Feast features, an extra column), with overrides."""
    data: dict[str, list] = {
        "transaction_id": [f"t{i}" for i in range(n)],
        "amount": [100.0] * n,
        "merchant_category": ["grocery"] * n,
        "channel": ["online"] * n,
        "country": ["DE"] * n,
        "hour": [13] * n,
        **{name: [2] * n for name in FEAST if "count" in name},
        **{name: [50.0] * n for name in FEAST if "count" not in name},
    }
    data.update(overrides)
    counts = [name for name in FEAST if "count" in name]
    return pl.DataFrame(data).with_columns(pl.col(counts).cast(pl.Int64))


def test_feature_names_have_a_fixed_order():
    assert feature_names(SPEC) == EXPECTED_ORDER


def test_output_columns_follow_feature_names_whatever_the_input_order():
    frame = _frame(3)
    shuffled = frame.select(reversed(frame.columns))
    out = model_inputs(shuffled, SPEC)
    assert out.columns == EXPECTED_ORDER
    assert set(out.schema.values()) == {pl.Float64}
    assert out.equals(model_inputs(frame, SPEC))


@pytest.mark.parametrize(
    ("column", "value", "code"),
    [
        ("merchant_category", "grocery", 0.0),
        ("merchant_category", "home", 9.0),
        ("channel", "chip", 0.0),
        ("channel", "online", 3.0),
        ("country", "US", 0.0),
        ("country", "DE", 2.0),
        ("country", "NG", 11.0),
    ],
)
def test_category_is_its_index_in_the_declared_values(column, value, code):
    out = model_inputs(_frame(**{column: [value]}), SPEC)
    assert out[column][0] == code


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("merchant_category", "crypto"),
        ("channel", "ONLINE"),  # codes are case-sensitive, like the contract
        ("country", None),
        ("country", ""),
    ],
)
def test_unknown_or_null_category_is_nan(column, value):
    out = model_inputs(_frame(**{column: [value]}), SPEC)
    assert math.isnan(out[column][0])


def test_categorical_and_enum_inputs_encode_like_strings():
    frame = _frame(2, channel=["swipe", "chip"])
    as_enum = frame.with_columns(pl.col("channel").cast(pl.Enum(["chip", "swipe"])))
    as_cat = frame.with_columns(pl.col("channel").cast(pl.Categorical))
    expected = model_inputs(frame, SPEC)["channel"].to_list()
    assert expected == [2.0, 0.0]
    assert model_inputs(as_enum, SPEC)["channel"].to_list() == expected
    assert model_inputs(as_cat, SPEC)["channel"].to_list() == expected


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"amount": [100.0], "cust_amount_mean_30d": [40.0]}, 2.5),
        ({"amount": [100.0], "cust_amount_mean_30d": [0.0]}, math.nan),
        ({"amount": [100.0], "cust_amount_mean_30d": [None]}, math.nan),
        ({"amount": [100.0], "cust_amount_mean_30d": [math.nan]}, math.nan),
        ({"amount": [None], "cust_amount_mean_30d": [40.0]}, math.nan),
    ],
)
def test_amount_to_customer_mean_ratio(overrides, expected):
    value = model_inputs(_frame(**overrides), SPEC)["amount_to_cust_mean"][0]
    assert value == pytest.approx(expected, nan_ok=True)


def test_missing_feast_features_and_null_numbers_are_nan_not_null():
    # What the online store returns for an entity it has never seen: every feature None.
    frame = _frame(hour=[None], **{name: [None] for name in FEAST})
    out = model_inputs(frame, SPEC)
    assert out.null_count().sum_horizontal()[0] == 0
    nan_columns = [c for c in out.columns if math.isnan(out[c][0])]
    assert nan_columns == ["hour", *FEAST, "amount_to_cust_mean"]


def test_integer_features_become_floats():
    out = model_inputs(_frame(hour=[7], cust_txn_count_7d=[12]), SPEC)
    assert (out["hour"][0], out["cust_txn_count_7d"][0]) == (7.0, 12.0)


def test_one_row_alone_is_bit_identical_to_the_same_row_in_a_big_frame():
    rng = np.random.default_rng(7)
    n = 5_000
    values = {c: SPEC.events.columns[c].values for c in SPEC.features.categorical}
    big = _frame(
        n,
        amount=rng.lognormal(3, 1.5, n).tolist(),
        merchant_category=rng.choice([*values["merchant_category"], "unknown"], n).tolist(),
        channel=rng.choice(values["channel"], n).tolist(),
        country=[
            None if i % 17 == 0 else c for i, c in enumerate(rng.choice(values["country"], n))
        ],
        hour=rng.integers(0, 24, n).tolist(),
        cust_amount_mean_30d=[
            None if i % 13 == 0 else 0.0 if i % 29 == 0 else float(v)
            for i, v in enumerate(rng.lognormal(3, 1, n))
        ],
        cust_online_share_30d=(rng.random(n) / 3).tolist(),
    )
    matrix = to_numpy(model_inputs(big, SPEC))
    for i in [0, 13, 29, 1234, n - 1]:
        alone = to_numpy(model_inputs(big.slice(i, 1), SPEC))
        assert alone.tobytes() == matrix[i : i + 1].tobytes()


def test_to_numpy_is_row_major_float64():
    frame = model_inputs(_frame(4), SPEC)
    matrix = to_numpy(frame)
    assert matrix.dtype == np.float64
    assert matrix.shape == (4, len(EXPECTED_ORDER))
    assert matrix.flags.c_contiguous


def test_to_numpy_rejects_columns_that_are_not_float64():
    with pytest.raises(ValueError, match=r"columns must be Float64: hour \(Int64\)"):
        to_numpy(_frame().select("amount", "hour"))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_frame().drop("cust_amount_mean_30d"), "missing column(s) cust_amount_mean_30d"),
        (_frame().drop("country", "hour"), "missing column(s) country, hour"),
        (_frame(amount=["12.5"]), "amount: must be numeric"),
        (_frame(channel=[3]), "channel: a categorical field must hold strings"),
    ],
)
def test_bad_frames_are_rejected_with_the_field_named(frame, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        model_inputs(frame, SPEC)


def test_unknown_feature_service_is_a_clear_error():
    spec = SPEC.model_copy(
        update={"features": SPEC.features.model_copy(update={"service": "fraud_v9"})}
    )
    with pytest.raises(ValueError, match="no layout declared for 'fraud_v9'"):
        feature_names(spec)
    with pytest.raises(ValueError, match="no layout declared for 'fraud_v8'"):
        model_inputs(_frame(), SPEC, service="fraud_v8")


# --- fraud_v2: request-time inputs -----------------------------------------------------------

V2 = SERVICES["fraud_v2"]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _frame_v2(n: int = 1, **overrides: list) -> pl.DataFrame:
    data: dict[str, list] = {
        "event_timestamp": [NOW] * n,
        "amount": [120.0] * n,
        "merchant_category": ["grocery"] * n,
        "channel": ["online"] * n,
        "country": ["US"] * n,
        "hour": [12] * n,
        **{f: [3] * n for f in V2.features if "count" in f or "distinct" in f or "labels_" in f},
        **{f: [40.0] * n for f in V2.features if "amount" in f or "rate" in f},
        "merch_labels_30d": [5] * n,
        "cust_last_txn_epoch_us": [int((NOW - timedelta(minutes=90)).timestamp() * 1e6)] * n,
    }
    data.update(overrides)
    return pl.DataFrame(data).with_columns(pl.col("event_timestamp").cast(pl.Datetime("us", "UTC")))


def test_fraud_v2_names_leave_out_helpers_and_end_with_request_time_inputs():
    names = feature_names(FRAUD)
    assert FRAUD.features.service == "fraud_v2"
    assert names[:5] == ["amount", "merchant_category", "channel", "country", "hour"]
    assert "cust_last_txn_epoch_us" not in names  # an absolute time is not a model input
    assert names[-5:] == [
        "amount_to_cust_mean_30d",
        "amount_zscore_cust_30d",
        "amount_to_cust_sum_1d",
        "secs_since_cust_last_txn",
        "amount_to_merch_mean_30d",
    ]
    assert model_inputs(_frame_v2(), FRAUD).columns == names
    assert feature_names(FRAUD, service="fraud_v1") == EXPECTED_ORDER


@pytest.mark.parametrize(
    ("overrides", "column", "expected"),
    [
        ({}, "secs_since_cust_last_txn", 5400.0),
        ({"cust_last_txn_epoch_us": [None]}, "secs_since_cust_last_txn", math.nan),
        ({}, "amount_to_cust_mean_30d", 3.0),
        ({"cust_amount_std_30d": [20.0]}, "amount_zscore_cust_30d", 4.0),
        ({"cust_amount_std_30d": [0.0]}, "amount_zscore_cust_30d", math.nan),
        ({"cust_amount_std_30d": [None]}, "amount_zscore_cust_30d", math.nan),
        ({"cust_amount_sum_1d": [0.0]}, "amount_to_cust_sum_1d", math.nan),
        ({"merch_amount_mean_30d": [60.0]}, "amount_to_merch_mean_30d", 2.0),
    ],
)
def test_request_time_inputs(overrides, column, expected):
    value = model_inputs(_frame_v2(**overrides), FRAUD)[column][0]
    assert value == pytest.approx(expected, nan_ok=True)


def test_elapsed_time_uses_the_request_time_and_needs_it():
    later = _frame_v2(event_timestamp=[NOW + timedelta(hours=1)])
    assert model_inputs(later, FRAUD)["secs_since_cust_last_txn"][0] == 9000.0
    with pytest.raises(ValueError, match=re.escape("missing column(s) event_timestamp")):
        model_inputs(_frame_v2().drop("event_timestamp"), FRAUD)


def test_a_model_pinned_to_fraud_v1_is_fed_by_fraud_v1_under_a_fraud_v2_spec():
    v1_row = _frame()  # fraud_v1 features only, as the v1 online lookup returns them
    with pytest.raises(ValueError, match="missing column"):
        model_inputs(v1_row, FRAUD)
    pinned = model_inputs(v1_row, FRAUD, service="fraud_v1")
    assert pinned.equals(model_inputs(v1_row, SPEC))


def test_fraud_v2_one_row_alone_equals_the_same_row_in_a_big_frame():
    rng = np.random.default_rng(3)
    n = 2_000
    big = _frame_v2(
        n,
        amount=rng.lognormal(3, 1.5, n).tolist(),
        cust_amount_std_30d=[
            None if i % 11 == 0 else float(v) for i, v in enumerate(rng.random(n))
        ],
        cust_last_txn_epoch_us=[
            None if i % 7 == 0 else int(v) for i, v in enumerate(rng.integers(0, 10**15, n))
        ],
    )
    matrix = to_numpy(model_inputs(big, FRAUD))
    for i in [0, 7, 11, 1999]:
        alone = to_numpy(model_inputs(big.slice(i, 1), FRAUD))
        assert alone.tobytes() == matrix[i : i + 1].tobytes()
