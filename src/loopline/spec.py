"""The use-case spec: what a use case is, declared in YAML and validated by pydantic.

A use case names its entities, its event table and timestamp, its label and how late the label
arrives, the data contract of raw batches, the model inputs, metrics and promotion gates. The
platform code reads only this; adding a use case is adding a spec and feature definitions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

USECASES_DIR = Path(__file__).with_name("usecases")

ColumnType = Literal["string", "int", "float", "datetime", "category", "bool"]


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
    """Contract of one raw column."""

    type: ColumnType
    nullable: bool = False
    unique: bool = False
    min: float | None = None
    max: float | None = None
    values: list[str] | None = Field(default=None, description="Allowed categories.")

    @model_validator(mode="after")
    def _check(self) -> ColumnRule:
        if self.type == "category" and not self.values:
            raise ValueError("a category column needs a non-empty 'values' list")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class TableSpec(_Strict):
    """A raw input stream and the curated table it lands in."""

    table: str
    id: str | None = Field(default=None, description="Column that identifies a row.")
    timestamp: str
    columns: dict[str, ColumnRule]

    @model_validator(mode="after")
    def _check(self) -> TableSpec:
        for name in [self.timestamp, *([self.id] if self.id else [])]:
            if name not in self.columns:
                raise ValueError(f"column '{name}' is not declared in 'columns'")
        return self


class LabelSpec(TableSpec):
    """Where labels come from, which column holds them, and how late they arrive."""

    column: str
    delay_days: int = Field(ge=0, description="Days until an unlabelled event counts as negative.")


class FeatureTable(_Strict):
    """A feature table: computed from the curated events by a builder, served by Feast."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Feast feature view name.")
    entity: str = Field(description="Join key of the entity the table describes.")
    builder: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'module:function' taking the events frame and as_of, returning the table.",
    )


class FeaturesSpec(_Strict):
    """Model inputs: request fields, the Feast feature service, and categorical fields."""

    service: str
    tables: list[FeatureTable] = Field(min_length=1)
    request: list[str] = Field(description="Fields taken from the event itself.")
    categorical: list[str] = Field(default_factory=list)


class Gate(_Strict):
    """A promotion rule evaluated on the holdout."""

    name: str
    kind: Literal["min", "max", "beats_champion"]
    metric: str
    threshold: float | None = None
    tolerance: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> Gate:
        if self.kind in ("min", "max") and self.threshold is None:
            raise ValueError(f"gate '{self.name}' of kind '{self.kind}' needs a threshold")
        return self


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


class UseCaseSpec(_Strict):
    """A whole use case."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    description: str = ""
    task: Literal["binary_classification", "regression"]
    model_name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    entities: list[Entity] = Field(min_length=1)
    events: TableSpec
    labels: LabelSpec
    features: FeaturesSpec
    metrics: list[str] = Field(min_length=1)
    primary_metric: str
    training: TrainingSpec = TrainingSpec()
    gates: list[Gate] = Field(default_factory=list)
    drift: DriftSpec = DriftSpec()

    @model_validator(mode="after")
    def _check(self) -> UseCaseSpec:
        if self.primary_metric not in self.metrics:
            raise ValueError(f"primary_metric '{self.primary_metric}' is not in 'metrics'")
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
        for gate in self.gates:
            if gate.metric not in self.metrics:
                raise ValueError(f"gate '{gate.name}' uses metric '{gate.metric}' not in 'metrics'")
        return self

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
