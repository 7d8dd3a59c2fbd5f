"""The use-case spec: what a use case is, declared in YAML and validated by pydantic.

A use case names its entities, its event table and timestamp, its label and how late the label
arrives, the data contract of raw batches, the model inputs, metrics and promotion gates. The
platform code reads only this; adding a use case is adding a spec and feature definitions.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

USECASES_DIR = Path(__file__).with_name("usecases")

ColumnType = Literal["string", "int", "float", "datetime", "category", "bool"]
Severity = Literal["hard", "soft"]
"""How a broken rule is handled: `hard` rejects the whole batch, `soft` quarantines the rows."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _duration(value: object) -> object:
    """'90s', '15m', '12h', '3d', '2w' as a timedelta; anything else goes to pydantic."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return timedelta(**{_DURATION_UNITS[match.group(2)]: float(match.group(1))})
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class SpecError(ValueError):
    """A use-case spec could not be found or is invalid; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entity(_Strict):
    """A thing features are keyed by (a customer, a merchant)."""

    name: str
    join_key: str
    description: str = ""


class ColumnRule(_Strict):
    """Contract of one raw column.

    A value that does not parse as `type` (and a column of another type in a typed file) always
    rejects the batch. `severity` says what the value rules do when broken: nulls, uniqueness,
    range, categories, finiteness and length.
    """

    type: ColumnType
    nullable: bool = False
    unique: bool = False
    min: float | None = None
    max: float | None = None
    values: list[str] | None = Field(default=None, description="Allowed categories.")
    severity: Severity = "hard"
    finite: bool = Field(default=True, description="Floats: refuse NaN and +-inf.")
    max_length: int = Field(default=65_536, gt=0, description="Strings: longest value, bytes.")

    @model_validator(mode="after")
    def _check(self) -> ColumnRule:
        if self.type == "category" and not self.values:
            raise ValueError("a category column needs a non-empty 'values' list")
        if self.values is not None and self.type not in ("category", "string"):
            raise ValueError(f"'values' applies to category or string columns, not {self.type}")
        if (self.min is not None or self.max is not None) and self.type not in ("int", "float"):
            raise ValueError(f"'min'/'max' apply to int or float columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


_OPERAND = re.compile(
    r"^(?:(?P<func>hour|day|weekday|date|abs)\((?P<inner>[^()]*)\)|(?P<plain>[^()]*))$"
)
_NAME = r"[a-z_][a-z0-9_]*"
_REF = re.compile(rf"^(?:(?P<table>{_NAME})\.)?(?P<column>{_NAME})$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_COMPARISON = re.compile(r"^\s*(?P<left>.+?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<right>.+?)\s*$")


class Operand(NamedTuple):
    """One side of a row rule: a column (of this table or a referenced one), maybe wrapped in
    a function, or a number."""

    column: str | None
    table: str | None = None
    func: str | None = None
    number: float | None = None

    @property
    def name(self) -> str:
        """The frame column holding the operand's values (`table.column` for references)."""
        assert self.column is not None
        return f"{self.table}.{self.column}" if self.table else self.column


def parse_operand(text: str) -> Operand:
    """Parse `col`, `table.col`, `hour(col)` or a number.

    Raises:
        ValueError: the text is none of those.
    """
    text = text.strip()
    if _NUMBER.match(text):
        return Operand(column=None, number=float(text))
    match = _OPERAND.match(text)
    inner = (match.group("inner") if match and match.group("func") else text).strip()
    ref = _REF.match(inner)
    if ref is None:
        raise ValueError(
            f"operand '{text}' must be a column, table.column, a number, or "
            "hour()/day()/weekday()/date()/abs() of a column"
        )
    func = match.group("func") if match else None
    return Operand(column=ref.group("column"), table=ref.group("table"), func=func)


def parse_check(check: str) -> tuple[Operand, str, Operand]:
    """Split a row rule `<operand> <op> <operand>` into its parts.

    Raises:
        ValueError: the check is not a comparison of two operands, or its left side is a number.
    """
    match = _COMPARISON.match(check)
    if match is None:
        raise ValueError(f"check '{check}' must compare two operands with ==, !=, <, <=, >, >=")
    left, right = parse_operand(match.group("left")), parse_operand(match.group("right"))
    if left.column is None:
        raise ValueError(f"check '{check}': the left side must be a column")
    return left, match.group("op"), right


class RowRule(_Strict):
    """A cross-field rule checked on every row: `<operand> <op> <operand>`.

    For example `hour == hour(event_timestamp)`, or `label_timestamp >=
    transactions.event_timestamp` through a reference.

    Rows where either side is null pass (nulls are the column rules' business).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    check: str
    severity: Severity = "soft"

    @field_validator("check")
    @classmethod
    def _parse(cls, value: str) -> str:
        parse_check(value)
        return value

    @property
    def operands(self) -> tuple[Operand, str, Operand]:
        """(left, operator, right)."""
        return parse_check(self.check)


class Reference(_Strict):
    """Rows must point at an existing row of another table of the use case (by key).

    Its columns can then be used in row rules as `<table>.<column>`.
    """

    column: str
    table: str
    key: str | None = Field(default=None, description="Key in the other table; default: column.")
    severity: Severity = "soft"

    @property
    def target_key(self) -> str:
        """The key column in the referenced table."""
        return self.key or self.column


class TimestampRule(_Strict):
    """Sanity bounds for every datetime column: not before `min`, not after now + `max_future`."""

    min: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    max_future: Duration = timedelta(days=1)
    severity: Severity = "soft"

    @field_validator("min")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class Freshness(_Strict):
    """The newest timestamp of a batch must be at most `max_age` old at ingest time.

    `hard` rejects a stale batch; `warn` accepts it and records a warning in the batch report.
    """

    max_age: Duration
    severity: Literal["hard", "warn"] = "warn"


class SourceFormat(_Strict):
    """How the raw files of a table are written (CSV dialect and text encoding)."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    quote_char: str | None = Field(default='"', min_length=1, max_length=1)

    @field_validator("encoding")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError as exc:
            raise ValueError(f"unknown text encoding '{value}'") from exc


class TableContract(_Strict):
    """Batch-level rules of a table's data contract.

    `version` is bumped when a column's type changes or a column is dropped: the curated table
    is then migrated; without the bump such a change rejects the batch.
    """

    version: int = Field(default=1, ge=1)
    extra_columns: Literal["ignore", "reject"] = "ignore"
    allow_empty: bool = Field(default=False, description="Accept files with no rows.")
    max_quarantine_fraction: float = Field(
        default=0.5, ge=0, le=1, description="Above this share of failing rows, reject."
    )
    timestamps: TimestampRule = TimestampRule()
    freshness: Freshness | None = None
    rules: list[RowRule] = Field(default_factory=list)
    references: list[Reference] = Field(default_factory=list)


class TableSpec(_Strict):
    """A raw input stream and the curated table it lands in."""

    table: str
    id: str | None = Field(default=None, description="Column that identifies a row.")
    timestamp: str
    columns: dict[str, ColumnRule]
    contract: TableContract = TableContract()
    source: SourceFormat = SourceFormat()

    @model_validator(mode="after")
    def _check(self) -> TableSpec:
        for name in [self.timestamp, *([self.id] if self.id else [])]:
            if name not in self.columns:
                raise ValueError(f"column '{name}' is not declared in 'columns'")
        if self.columns[self.timestamp].type != "datetime":
            raise ValueError(f"timestamp column '{self.timestamp}' must have type datetime")
        referenced = {ref.table for ref in self.contract.references}
        for ref in self.contract.references:
            if ref.column not in self.columns:
                raise ValueError(f"reference column '{ref.column}' is not declared in 'columns'")
        names = [rule.name for rule in self.contract.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rule names must be unique, got {names}")
        for rule in self.contract.rules:
            for operand in rule.operands[::2]:
                if operand.column is None:
                    continue
                if operand.table is None and operand.column not in self.columns:
                    raise ValueError(
                        f"rule '{rule.name}': column '{operand.column}' is not declared"
                    )
                if operand.table is not None and operand.table not in referenced:
                    raise ValueError(
                        f"rule '{rule.name}': table '{operand.table}' is not in 'references'"
                    )
        return self


class LabelSpec(TableSpec):
    """Where labels come from, which column holds them, and how late they arrive."""

    column: str
    delay_days: int = Field(ge=0, description="Days until an unlabelled event counts as negative.")
    classes: list[str] | None = Field(
        default=None, description="Multiclass: class names; label value i is classes[i]."
    )


class FeatureTable(_Strict):
    """A feature table: computed from the curated events by a builder, served by Feast."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Feast feature view name.")
    entity: str = Field(description="Join key of the entity the table describes.")
    builder: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'module:function' taking the events frame and as_of, returning the table.",
    )


class DerivedInput(_Strict):
    """A request-time model input computed from request fields and Feast features.

    `ratio`: numerator / denominator; `zscore`: (value - mean) / std; `elapsed`: seconds from
    `since` (epoch microseconds) to the event time. See `loopline.features.transform`.
    """

    kind: Literal["ratio", "zscore", "elapsed"]
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    numerator: str | None = None
    denominator: str | None = None
    value: str | None = None
    mean: str | None = None
    std: str | None = None
    since: str | None = None

    @model_validator(mode="after")
    def _check(self) -> DerivedInput:
        needs = {
            "ratio": ("numerator", "denominator"),
            "zscore": ("value", "mean", "std"),
            "elapsed": ("since",),
        }[self.kind]
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            raise ValueError(f"derived input '{self.name}' ({self.kind}) needs {missing}")
        return self


class ServiceLayoutSpec(_Strict):
    """What a Feast feature service feeds the model, declared with the use case.

    Attributes:
        views: Feature view -> its features, in model-input order.
        derived: Request-time inputs computed from them.
        helpers: Features fetched only to derive inputs (not model inputs themselves).
    """

    views: dict[str, list[str]] = Field(min_length=1)
    derived: list[DerivedInput] = Field(default_factory=list)
    helpers: list[str] = Field(default_factory=list)


class FeaturesSpec(_Strict):
    """Model inputs: request fields, the Feast feature service, and categorical fields.

    `layouts` declares the services of this use case; services without a declared layout are
    looked up among loopline's built-in ones (`loopline.features.feast_ops.SERVICES`).
    """

    service: str
    tables: list[FeatureTable] = Field(min_length=1)
    request: list[str] = Field(description="Fields taken from the event itself.")
    categorical: list[str] = Field(default_factory=list)
    layouts: dict[str, ServiceLayoutSpec] = Field(default_factory=dict)


_GATE_NAME = r"^[a-z][a-z0-9_]{0,62}$"


class Gate(_Strict):
    """A promotion rule; a version with a failed gate is not promoted unless forced.

    Each kind is a subclass picked by `kind` (see `AnyGate`); `loopline.registry.gates`
    evaluates them on evidence `loopline.registry.evidence` collects for the candidate.
    """

    name: str = Field(pattern=_GATE_NAME, description="Unique among the spec's gates.")
    kind: str


class MetricGate(Gate):
    """`min`: the candidate's holdout metric must be >= `threshold` (a floor); `max`: <= it (a
    ceiling)."""

    kind: Literal["min", "max"]
    metric: str
    threshold: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> MetricGate:
        if self.threshold is None:
            raise ValueError(f"gate '{self.name}' of kind '{self.kind}' needs a threshold")
        return self


class BeatsChampionGate(Gate):
    """The candidate must beat the current champion by at least `margin` in `metric`'s better
    direction, with both models scored on the same rows: the candidate's whole holdout, and
    separately its last `recent_days` days (the most recent labelled window). Passes when there
    is no champion."""

    kind: Literal["beats_champion"]
    metric: str
    margin: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    recent_days: int = Field(default=7, ge=1, le=3650)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "tolerance" in data:
            raise ValueError(
                "'tolerance' was replaced by 'margin' (>= 0): how much better than the champion "
                "the candidate must be"
            )
        return data


class FairnessGate(Gate):
    """Binary tasks: the evaluation report's worst group of `attribute` (one of
    `evaluation.sensitive`) against the best group, for `measure` at the decision threshold:
    its ratio must be >= `min_ratio` and/or its absolute difference <= `max_difference`."""

    kind: Literal["fairness"]
    attribute: str
    measure: Literal["selection_rate", "tpr", "fpr"]
    min_ratio: float | None = Field(default=None, gt=0, le=1)
    max_difference: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> FairnessGate:
        if self.min_ratio is None and self.max_difference is None:
            raise ValueError(f"gate '{self.name}' needs min_ratio and/or max_difference")
        return self


class CalibrationGate(Gate):
    """Binary tasks: the holdout's expected calibration error must be <= `max_ece`."""

    kind: Literal["calibration"]
    max_ece: float = Field(gt=0, le=1)


class LatencyGate(Gate):
    """Single-row predictions of the model file must take <= `p99_ms` at the 99th percentile,
    timed on `rows` real holdout rows after `warmup` untimed ones."""

    kind: Literal["latency"]
    p99_ms: float = Field(gt=0, allow_inf_nan=False)
    rows: int = Field(default=500, ge=10, le=100_000)
    warmup: int = Field(default=50, ge=0, le=10_000)


class ModelSizeGate(Gate):
    """The model file (LightGBM text) must be <= `max_mb` megabytes (MB = 2**20 bytes)."""

    kind: Literal["model_size"]
    max_mb: float = Field(gt=0, allow_inf_nan=False)


class DataGate(Gate):
    """Checks on the rows the model was fit on (the training side of the split): at least
    `min_rows`; for binary tasks a positive rate within [`min_positive_rate`,
    `max_positive_rate`]; every model input missing (NaN) in at most `max_null_fraction` of
    the rows."""

    kind: Literal["data"]
    min_rows: int | None = Field(default=None, ge=1)
    min_positive_rate: float | None = Field(default=None, ge=0, le=1)
    max_positive_rate: float | None = Field(default=None, ge=0, le=1)
    max_null_fraction: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> DataGate:
        checks = (
            self.min_rows,
            self.min_positive_rate,
            self.max_positive_rate,
            self.max_null_fraction,
        )
        if all(check is None for check in checks):
            raise ValueError(
                f"gate '{self.name}' needs at least one of min_rows, min_positive_rate, "
                "max_positive_rate, max_null_fraction"
            )
        low, high = self.min_positive_rate, self.max_positive_rate
        if low is not None and high is not None and low > high:
            raise ValueError(
                f"gate '{self.name}': min_positive_rate ({low}) is greater than "
                f"max_positive_rate ({high})"
            )
        return self


AnyGate = Annotated[
    MetricGate
    | BeatsChampionGate
    | FairnessGate
    | CalibrationGate
    | LatencyGate
    | ModelSizeGate
    | DataGate,
    Field(discriminator="kind"),
]
"""A gate of any kind, parsed by its `kind`."""

BINARY_ONLY_GATES = frozenset({"fairness", "calibration"})
"""Gate kinds defined for binary classification only (they judge decision rates and
probabilities)."""


Task = Literal["binary_classification", "regression", "multiclass_classification"]

TASK_METRICS: dict[str, frozenset[str]] = {
    "binary_classification": frozenset(
        {"roc_auc", "average_precision", "log_loss", "brier", "positive_rate", "accuracy"}
    ),
    "regression": frozenset({"rmse", "mae", "r2", "mape"}),
    "multiclass_classification": frozenset({"log_loss", "accuracy", "macro_f1"}),
}
"""The metrics each task can compute (`loopline.training.metrics` implements them)."""


class CostMatrix(_Strict):
    """What each outcome of a binary decision costs; the decision threshold minimises it."""

    true_positive: float = 0.0
    false_positive: float = Field(default=1.0, ge=0)
    false_negative: float = Field(default=1.0, ge=0)
    true_negative: float = 0.0


class Segment(_Strict):
    """A slice of the holdout to report metrics on: one slice per value of `column`, or per
    bin of a numeric column when `bins` (ascending edges) is given."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    column: str
    bins: list[float] | None = Field(default=None, min_length=1)

    @field_validator("bins")
    @classmethod
    def _ascending(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(b >= a for a, b in zip(value[1:], value, strict=False)):
            raise ValueError(f"bins must be strictly ascending, got {value}")
        return value


class EvaluationSpec(_Strict):
    """What the evaluation report covers beyond the overall metrics."""

    segments: list[Segment] = Field(default_factory=list)
    sensitive: list[str] = Field(
        default_factory=list, description="Events columns to report fairness on."
    )
    costs: CostMatrix | None = Field(
        default=None, description="Binary tasks: choose the decision threshold by cost."
    )
    threshold: float = Field(default=0.5, gt=0, lt=1, description="Used when no costs.")
    calibration_bins: int = Field(default=10, ge=2, le=100)
    min_slice_rows: int = Field(default=30, ge=1, description="Smaller slices are flagged.")


class ParamRange(_Strict):
    """A tunable LightGBM parameter: ints and floats in [low, high] (log scale optional), or a
    choice among values."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[float | int | str | bool] | None = None

    @model_validator(mode="after")
    def _check(self) -> ParamRange:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical range needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"an {self.type} range needs low <= high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        return self


def _default_search_space() -> dict[str, ParamRange]:
    return {
        "learning_rate": ParamRange(type="float", low=0.01, high=0.3, log=True),
        "num_leaves": ParamRange(type="int", low=8, high=128, log=True),
        "min_data_in_leaf": ParamRange(type="int", low=5, high=200, log=True),
        "feature_fraction": ParamRange(type="float", low=0.5, high=1.0),
        "lambda_l2": ParamRange(type="float", low=1e-3, high=10.0, log=True),
    }


class TuningSpec(_Strict):
    """Hyper-parameter search: Optuna TPE with pruning, within a budget of trials or minutes."""

    n_trials: int = Field(default=20, ge=1)
    timeout_minutes: float | None = Field(default=None, gt=0)
    parallelism: int = Field(default=2, ge=1, le=64)
    pruning: bool = True
    search_space: dict[str, ParamRange] = Field(default_factory=_default_search_space)


class TrainingSpec(_Strict):
    """How to train: LightGBM params, seed, and the time-ordered holdout share."""

    params: dict[str, float | int | str | bool] = Field(default_factory=dict)
    num_boost_round: int = Field(default=200, gt=0)
    early_stopping_rounds: int = Field(default=20, gt=0)
    seed: int = 42
    valid_fraction: float = Field(default=0.2, gt=0, lt=1)
    warmup_days: int = Field(
        default=0, ge=0, description="Leading days left out of training: windows still fill."
    )


class DriftSpec(_Strict):
    """When a feature counts as drifted: population stability index above a threshold."""

    psi_threshold: float = Field(default=0.2, gt=0)
    min_rows: int = Field(default=200, gt=0)


class PromotionSpec(_Strict):
    """Promotion policy: who may override failed gates, and whether `champion` needs two people.

    Roles are normalised (NFKC, trimmed, casefolded), so `Model-Risk` and `model-risk` are one
    role. An override of failed gates needs a reason and one of `approver_roles`; none listed
    means no one may override. With `two_person_rule`, `champion` moves only when someone asks
    (a request, with a reason) and a different person with an approver role approves it;
    unanswered requests expire after `request_ttl`.
    """

    approver_roles: list[str] = Field(
        default_factory=list, description="Roles that may approve overrides and requests."
    )
    two_person_rule: bool = Field(
        default=False, description="`champion` moves only by request + someone else's approval."
    )
    request_ttl: Duration = Field(
        default=timedelta(days=7), description="How long a promotion request stays open."
    )

    @staticmethod
    def normalise_role(raw: object) -> str:
        """The one spelling of a role name (`' Model-Risk '` -> `'model-risk'`).

        Raises:
            ValueError: not a string, empty, longer than 64, or outside `[a-z][a-z0-9._-]*`.
        """
        if not isinstance(raw, str):
            raise ValueError(f"role must be a string, got {type(raw).__name__}")
        role = unicodedata.normalize("NFKC", raw).strip().casefold()
        if not re.fullmatch(r"[a-z][a-z0-9._-]{0,63}", role):
            raise ValueError(
                f"role {raw!r}: use up to 64 letters, digits, '.', '_' and '-', "
                "starting with a letter"
            )
        return role

    @field_validator("approver_roles", mode="before")
    @classmethod
    def _roles(cls, value: object) -> object:
        if isinstance(value, str):
            raise ValueError("approver_roles must be a list of role names, e.g. [model-risk]")
        if not isinstance(value, list | tuple):
            return value
        roles: list[str] = []
        for raw in value:
            role = cls.normalise_role(raw)
            if role not in roles:
                roles.append(role)
        return roles

    @model_validator(mode="after")
    def _check(self) -> PromotionSpec:
        if self.two_person_rule and not self.approver_roles:
            raise ValueError("two_person_rule needs at least one of approver_roles to approve")
        if not timedelta(minutes=1) <= self.request_ttl <= timedelta(days=365):
            raise ValueError("request_ttl must be between 1m and 365d")
        return self


class ServingSpec(_Strict):
    """How the prediction API serves the use case.

    A model version holding `canary_alias` answers `canary_share` of the traffic, chosen by a
    hash of the request's `sticky_key` (the same entity always gets the same model); one
    holding `shadow_alias` scores every request off the critical path, logged and never
    returned. Moving or deleting those aliases changes the routing without a restart.
    """

    canary_alias: str = Field(default="canary", pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    canary_share: float = Field(default=0.1, ge=0.0, le=1.0)
    shadow_alias: str = Field(default="shadow", pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    sticky_key: str | None = Field(
        default=None, description="Join key the canary split hashes; default the first one."
    )
    max_event_delay: Duration = Field(
        default=timedelta(days=2), description="Oldest event time a request may carry."
    )
    max_clock_skew: Duration = Field(
        default=timedelta(minutes=5), description="How far in the future an event time may be."
    )
    max_batch_rows: int = Field(default=1_000, ge=1, le=100_000)


class UseCaseSpec(_Strict):
    """A whole use case."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str = ""
    task: Task
    model_name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    entities: list[Entity] = Field(min_length=1)
    events: TableSpec
    labels: LabelSpec
    features: FeaturesSpec
    metrics: list[str] = Field(min_length=1)
    primary_metric: str
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    tuning: TuningSpec = TuningSpec()
    gates: list[AnyGate] = Field(default_factory=list)
    drift: DriftSpec = DriftSpec()
    promotion: PromotionSpec = PromotionSpec()
    serving: ServingSpec = ServingSpec()

    @model_validator(mode="after")
    def _check(self) -> UseCaseSpec:
        keys = [e.join_key for e in self.entities]
        if self.serving.sticky_key is not None and self.serving.sticky_key not in keys:
            raise ValueError(f"serving.sticky_key '{self.serving.sticky_key}' is not a join key")
        if self.primary_metric not in self.metrics:
            raise ValueError(f"primary_metric '{self.primary_metric}' is not in 'metrics'")
        unknown = [m for m in self.metrics if m not in TASK_METRICS[self.task]]
        if unknown:
            known = sorted(TASK_METRICS[self.task])
            raise ValueError(f"metrics {unknown} do not apply to {self.task} (known: {known})")
        if self.task == "multiclass_classification" and not self.labels.classes:
            raise ValueError("a multiclass_classification task needs 'labels.classes'")
        if self.evaluation.costs is not None and self.task != "binary_classification":
            raise ValueError("evaluation.costs applies to binary_classification only")
        for column in [s.column for s in self.evaluation.segments] + self.evaluation.sensitive:
            if column not in self.events.columns:
                raise ValueError(f"evaluation column '{column}' is not an events column")
        for name in self.features.request:
            if name not in self.events.columns:
                raise ValueError(f"request feature '{name}' is not an events column")
        for name in self.features.categorical:
            rule = self.events.columns.get(name)
            if rule is None or rule.type != "category":
                raise ValueError(f"categorical feature '{name}' is not a category column")
        for table in self.features.tables:
            if table.entity not in self.entity_keys:
                raise ValueError(
                    f"feature table '{table.name}' uses unknown entity '{table.entity}'"
                )
        for key in (e.join_key for e in self.entities):
            if key not in self.events.columns:
                raise ValueError(f"entity join key '{key}' is not an events column")
        if self.labels.column not in self.labels.columns:
            raise ValueError(f"label column '{self.labels.column}' is not declared")
        self._check_references()
        self._check_gates()
        return self

    def _check_gates(self) -> None:
        names = [gate.name for gate in self.gates]
        if len(set(names)) != len(names):
            raise ValueError(f"gate names must be unique, got {names}")
        binary = self.task == "binary_classification"
        for gate in self.gates:
            metric = getattr(gate, "metric", None)
            if metric is not None and metric not in self.metrics:
                raise ValueError(f"gate '{gate.name}' uses metric '{metric}' not in 'metrics'")
            if gate.kind in BINARY_ONLY_GATES and not binary:
                raise ValueError(
                    f"gate '{gate.name}' of kind '{gate.kind}' applies to "
                    f"binary_classification only, not {self.task}"
                )
            if isinstance(gate, FairnessGate) and gate.attribute not in self.evaluation.sensitive:
                raise ValueError(
                    f"gate '{gate.name}': attribute '{gate.attribute}' is not in "
                    f"evaluation.sensitive {self.evaluation.sensitive}"
                )
            if isinstance(gate, DataGate) and not binary:
                rates = gate.min_positive_rate, gate.max_positive_rate
                if any(rate is not None for rate in rates):
                    raise ValueError(
                        f"gate '{gate.name}': min/max_positive_rate apply to "
                        f"binary_classification only, not {self.task}"
                    )

    def _check_references(self) -> None:
        tables = {t.table: t for t in (self.events, self.labels)}
        for table in tables.values():
            for ref in table.contract.references:
                target = tables.get(ref.table)
                if target is None or target.table == table.table:
                    raise ValueError(
                        f"table '{table.table}' references unknown table '{ref.table}' "
                        f"(tables: {sorted(set(tables) - {table.table})})"
                    )
                if ref.target_key not in target.columns:
                    raise ValueError(
                        f"reference key '{ref.target_key}' is not a '{ref.table}' column"
                    )
            for rule in table.contract.rules:
                for operand in rule.operands[::2]:
                    if operand.table and operand.column not in tables[operand.table].columns:
                        column = f"{operand.table}.{operand.column}"
                        raise ValueError(f"rule '{rule.name}': no column '{column}'")

    @property
    def tables(self) -> dict[str, TableSpec]:
        """The raw input tables (events, labels) by table name."""
        return {self.events.table: self.events, self.labels.table: self.labels}

    @property
    def entity_keys(self) -> list[str]:
        """Join keys of all entities, in declaration order."""
        return [e.join_key for e in self.entities]


def available_use_cases() -> list[str]:
    """Names of the use cases shipped with loopline."""
    return sorted(p.stem for p in USECASES_DIR.glob("*.yaml"))


def load_spec(name_or_path: str | Path) -> UseCaseSpec:
    """Load and validate a use-case spec by shipped name or YAML path.

    Raises:
        SpecError: the spec does not exist or breaks a rule; the message names the field.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = USECASES_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(available_use_cases())
            raise SpecError(f"unknown use case '{name_or_path}' (known: {known})")
    if not path.is_file():
        raise SpecError(f"use-case spec file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec must be a mapping at the top level")
    try:
        return UseCaseSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(spec)"
        raise SpecError(f"{path}: field '{field}': {first['msg']}") from exc
