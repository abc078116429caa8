"""The configuration tree: one validated pydantic model, loaded from YAML or TOML, overridden by environment.

Environment variables named ``STREAMIMB_<SECTION>__<FIELD>`` override the file, e.g.
``STREAMIMB_MODEL__CLASSIFIER__KIND=logistic_regression``. Secrets are ``SecretStr`` and print masked.

>>> cfg = ServiceConfig.model_validate({"schema": {"label": "Class"}})
>>> cfg.event_schema.label, cfg.model.classifier.kind
('Class', 'portfolio')

Components are named from streamimb.registry's tables, and their parameters are checked against the
component's signature when the configuration is validated:

>>> ServiceConfig.model_validate({"model": {"imbalance": {"strategy": "oobb"}}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for ServiceConfig
model.imbalance.strategy
  unknown imbalance strategy 'oobb' (did you mean 'oob'?); allowed: none, oob, ...
"""

from __future__ import annotations

import json
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from streamimb.errors import ConfigError
from streamimb.io.settings import AlertmanagerConfig, KafkaConfig, PrometheusSourceConfig

# Command-line flags: applied over the environment, which is applied over the file.
_FLAG_OVERRIDES: ContextVar[dict[str, Any] | None] = ContextVar("_FLAG_OVERRIDES", default=None)


def _fail(problem: str | None) -> None:
    if problem:
        raise PydanticCustomError("unknown_component", "{problem}", {"problem": problem})


def _known(component: str) -> AfterValidator:
    """Validator of a component's name: a key of ``streamimb.registry.COMPONENTS[component].table``."""

    def check(name: str | None) -> str | None:
        if name is not None:
            from streamimb import registry  # here: registry imports river and the model code

            _fail(registry.name_problem(component, name))
        return name

    return AfterValidator(check)


def _accepted(component: str, name_field: str | None = None) -> AfterValidator:
    """Validator of a component's parameters: the names its factory (or the class it forwards to) takes.

    The component's name is the already-validated sibling field ``name_field``; skipped when that failed.
    """

    def check(params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if name_field is not None and name_field not in info.data:
            return params
        if params:
            from streamimb import registry

            name = info.data[name_field] if name_field is not None else None
            _fail(registry.params_problem(component, name, params))
        return params

    return AfterValidator(check)


class Section(BaseModel):
    """Base of every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EventSchema(Section):
    """How a flat record (CSV row or JSON object) becomes an Event."""

    id: str | None = Field(None, description="Column holding the event id; row number when absent.")
    time: str | None = Field(None, description="Column holding event time (epoch seconds or ISO 8601).")
    label: str | None = Field(None, description="Column holding the label; absent for unlabelled streams.")
    key: str | None = Field(None, description="Column used as the partitioning key (e.g. card or account).")
    entities: list[str] = Field(
        default_factory=list,
        description="Entity key columns (card, customer, merchant): each gets features from its earlier "
        "events (model.features); the keys themselves are not features.",
    )
    positive_class: str | None = Field(None, description="The rare class; inferred when absent.")
    numeric: list[str] | None = Field(
        None, description="Numeric feature columns; all others numeric if unset."
    )
    categorical: list[str] | None = Field(None, description="Categorical feature columns.")
    drop: list[str] = Field(default_factory=list, description="Columns never used as features.")
    label_map: dict[str, str] = Field(default_factory=dict, description="Raw label value -> class name.")
    classes: list[str] | None = Field(None, description="Known classes; other labels are dead-lettered.")
    max_categories: int = Field(64, ge=2, description="Distinct values kept per categorical column.")


class DetectorConfig(Section):
    """A one-class anomaly detector from the registry (see streamimb.registry.DETECTORS)."""

    kind: Annotated[str, _known("detector")] = "half_space_trees"
    params: Annotated[dict[str, Any], _accepted("detector", "kind")] = Field(default_factory=dict)


class CalibrationConfig(Section):
    """Turns raw anomaly scores into alerts: a streaming quantile or an alert budget."""

    kind: Literal["quantile", "budget"] = "quantile"
    quantile: float = Field(0.995, gt=0.0, lt=1.0)
    alerts: int = Field(5, ge=1, description="Budget: at most this many alerts ...")
    per_events: int = Field(1000, ge=1, description="... per this many events.")
    window: int = Field(5000, ge=100, description="Recent scores kept for quantiles and p-values.")
    warmup: int = Field(500, ge=0, description="Events scored before any anomaly alert is raised.")


class ClassifierConfig(Section):
    """The supervised online classifier (see streamimb.registry.CLASSIFIERS)."""

    kind: Annotated[str, _known("classifier")] = "portfolio"
    params: Annotated[dict[str, Any], _accepted("classifier", "kind")] = Field(default_factory=dict)


class ImbalanceConfig(Section):
    """How the classifier copes with a rare class whose prevalence moves (see streamimb.imbalance)."""

    strategy: Annotated[str | None, _known("strategy")] = Field(
        None, description="Strategy name; the benchmarked default when unset."
    )
    params: Annotated[dict[str, Any], _accepted("strategy", "strategy")] = Field(default_factory=dict)
    half_life: float = Field(2000.0, gt=0, description="Half-life of the class-prior tracker, in labels.")


class ThresholdConfig(Section):
    """How class probabilities become a decision (see streamimb.imbalance.threshold)."""

    policy: Annotated[str | None, _known("threshold")] = Field(
        None, description="Policy name; the benchmarked default when unset."
    )
    params: Annotated[dict[str, Any], _accepted("threshold", "policy")] = Field(default_factory=dict)


class DriftConfig(Section):
    """Change detectors on the anomaly score, the classifier's error and selected features."""

    detector: Annotated[str, _known("drift")] = Field(
        "adwin", description="A river drift detector (see streamimb.detectors.drift.DRIFT_DETECTORS)."
    )
    params: Annotated[dict[str, Any], _accepted("drift", "detector")] = Field(default_factory=dict)
    on_score: bool = True
    score_block: int = Field(250, ge=1, description="The score monitor sees means of blocks of this size.")
    on_error: bool = True
    features: list[str] = Field(default_factory=list)
    min_gap: int = Field(500, ge=0, description="Events between two reports of the same signal.")


class EvaluationConfig(Section):
    """Prequential evaluation: rolling window for live metrics, segments for the report."""

    rolling_window: int = Field(2000, ge=10)
    segments: int = Field(10, ge=1)
    keep_history: bool = Field(True, description="Keep per-event outcomes for exact overall/segment AUCs.")
    max_history: int = Field(5_000_000, ge=1000)


class AlertsConfig(Section):
    """Guards on the classifier's alerts (see streamimb.imbalance.threshold.AlertGuard)."""

    skill_margin: float | None = Field(
        0.5,
        ge=0.0,
        description="No classifier alert until the served score's rolling PR AUC beats the prevalence p by "
        "this share of the smaller class's share, (PR AUC - p) / min(p, 1 - p) (a lift of 1.5 for a rare "
        "class), beyond chance; null: no skill guard.",
    )
    min_positives: int = Field(20, ge=1, description="Scored positives needed to measure the skill.")
    max_rate: float | None = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="At most this share of events alert, over `per_events` (or `per_prevalence` times the "
        "rare class's measured prevalence, when larger); null: no cap.",
    )
    per_prevalence: float | None = Field(
        2.0,
        gt=0.0,
        description="The cap's multiple of the rare class's prevalence (see `max_rate`); null: `max_rate` "
        "is the cap whatever the prevalence.",
    )
    per_events: int = Field(
        10_000, ge=100, description="The rolling window of the alert-rate cap, in events."
    )


class FeaturesConfig(Section):
    """Per-entity features from earlier events and labels (see streamimb.entities)."""

    entities: list[str] = Field(
        default_factory=list, description="Entity key fields, with schema.entities (the service adds those)."
    )
    numeric: list[str] | None = Field(
        None, description="Numeric fields aggregated per entity; all numeric features when unset."
    )
    categorical: list[str] | None = Field(
        None, description="Categorical fields whose values per entity are tracked; all when unset."
    )
    windows: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [3_600.0, 86_400.0, 604_800.0, 2_592_000.0],
        min_length=1,
        description="Time constants of the exponentially weighted windows, in seconds of event time.",
    )
    risk_gap: float = Field(
        0.0, ge=0, description="Event time (s) a label waits before it counts towards its entities' risk."
    )
    max_keys: int = Field(100_000, ge=1, description="Keys kept per entity field (least recently seen go).")


class ModelConfig(Section):
    """Everything the Processor is built from."""

    detectors: list[DetectorConfig] = Field(default_factory=lambda: [DetectorConfig()])
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    imbalance: ImbalanceConfig = Field(default_factory=ImbalanceConfig)
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    decision: Literal["auto", "classifier", "anomaly", "either"] = Field(
        "auto",
        description="Which verdict raises an alert. 'auto': the anomaly detectors until the classifier has "
        "learned `min_positive_labels` examples of the rare class, the classifier after.",
    )
    min_positive_labels: int = Field(20, ge=0)
    learn_detectors_on: Literal["all", "negatives"] = Field(
        "all", description="'negatives': anomaly detectors skip events labelled with the rare class."
    )
    seed: int = 42
    batch: bool = Field(
        True,
        description="Process each poll batch at once: detectors score and learn the batch as arrays (same "
        "scores as event by event), the classifier batch-wise where it can. False: one event at a time.",
    )
    learn_slice: int = Field(
        100,
        ge=1,
        description="A batch classifier scores labelled events in slices of at most this many, learning each "
        "slice before scoring the next: smaller slices learn sooner from labels that come with the events, "
        "at more cost per event (100: chosen by leave-one-stream-out, benchmarks/choose_default.py). Late "
        "labels are learned as they come.",
    )
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    max_classes: int = Field(
        32, ge=2, description="Classes tracked; labels seen once this many are tracked count as 'other'."
    )


class FileSourceConfig(Section):
    """A CSV or JSONL file replayed through the same code as the service."""

    kind: Literal["file"] = "file"
    path: str | None = None
    format: Literal["auto", "csv", "jsonl"] = "auto"
    delimiter: str | None = Field(None, description="CSV delimiter; sniffed when unset.")
    max_record_bytes: int = Field(1_000_000, ge=64)


def _source_kind(value: Any) -> str:
    kind = value.get("kind", "file") if isinstance(value, dict) else getattr(value, "kind", "file")
    return kind if kind in ("file", "prometheus") else "file"


SourceConfig = Annotated[
    Annotated[FileSourceConfig, Tag("file")] | Annotated[PrometheusSourceConfig, Tag("prometheus")],
    Discriminator(_source_kind),
]


class FileSinkConfig(Section):
    path: str | None = Field(None, description="JSONL file for alerts.")


class LabelsConfig(Section):
    """Late labels on a labels topic: JSON ``{"id": <event id>, "label": <class>}`` (or ``event_id``)."""

    ttl_seconds: float = Field(7 * 86400.0, gt=0, description="Pending predictions older than this expire.")
    clock: Literal["event", "wall"] = Field(
        "wall", description="'event': TTL in event time (the newest event time seen), 'wall': wall clock."
    )
    max_pending: int = Field(1_000_000, ge=1, description="Pending predictions kept at most.")


class MetricsConfig(Section):
    address: str | None = Field(
        None, description="HOST:PORT for /metrics, /healthz, /readyz; off when unset."
    )


class ServiceLoopConfig(Section):
    """How `streamimb run` stops by itself and how it reports."""

    max_events: int | None = Field(None, ge=1, description="Stop after this many event records.")
    idle_timeout: float | None = Field(
        None, gt=0, description="Stop after this many seconds without records."
    )
    status_interval: float = Field(10.0, gt=0, description="Seconds between status log lines.")


class SeriesConfig(Section):
    """Anomaly detection on metric series read from Prometheus (``source.kind: prometheus``)."""

    threshold: float = Field(
        0.5, gt=0, lt=1, description="Alert at this score; 0.5 is every series' alarm level."
    )
    params: Annotated[dict[str, Any], _accepted("series")] = Field(
        default_factory=dict, description="SeriesAnomalyDetector parameters."
    )


class CheckpointConfig(Section):
    """Fault tolerance: signed per-partition snapshots of the model state and the offsets they cover."""

    directory: str | None = Field(
        None, description="Directory of checkpoint files; off when unset (model state is lost on restart)."
    )
    key: SecretStr | None = Field(
        None, description="HMAC-SHA256 key (>= 16 bytes) signing checkpoints; or STREAMIMB_CHECKPOINT__KEY."
    )
    key_file: str | None = Field(None, description="File holding the key, instead of `key`.")
    every_events: int = Field(10_000, ge=1, description="Checkpoint after this many records ...")
    every_seconds: float = Field(30.0, gt=0, description="... or this many seconds, and on partition revoke.")
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="Largest snapshot (uncompressed).")
    chunk_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Compressed snapshots are framed in chunks."
    )
    compression_level: int = Field(1, ge=0, le=9, description="zlib level.")
    on_invalid: Literal["fail", "fresh"] = Field(
        "fail", description="A refused checkpoint (tampered, foreign): stop with an error, or start fresh."
    )

    @model_validator(mode="after")
    def _check_key(self) -> CheckpointConfig:
        if self.key is not None and self.key_file is not None:
            raise ValueError("set checkpoint.key or checkpoint.key_file, not both")
        if self.directory is not None and self.key is None and self.key_file is None:
            raise ValueError(
                "checkpoint.key or checkpoint.key_file is required when checkpoint.directory is set"
            )
        if self.key is not None and len(self.key.get_secret_value().encode()) < 16:
            raise ValueError("checkpoint.key must be at least 16 bytes")
        return self


class LoggingConfig(Section):
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ServiceConfig(BaseSettings):
    """The root of the configuration tree."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="STREAMIMB_",
        env_nested_delimiter="__",
        populate_by_name=True,
    )

    event_schema: EventSchema = Field(default_factory=EventSchema, alias="schema")
    model: ModelConfig = Field(default_factory=ModelConfig)
    source: SourceConfig = Field(default_factory=FileSourceConfig)
    alerts_file: FileSinkConfig = Field(default_factory=FileSinkConfig)
    alertmanager: AlertmanagerConfig | None = Field(None, description="Also post alerts to Alertmanager.")
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    service: ServiceLoopConfig = Field(default_factory=ServiceLoopConfig)
    series: SeriesConfig = Field(default_factory=SeriesConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags win over the environment, which wins over the file's values (they arrive as init kwargs).
        flags = _FLAG_OVERRIDES.get()
        if flags:
            return InitSettingsSource(settings_cls, flags), env_settings, init_settings
        return env_settings, init_settings

    @field_validator("event_schema", mode="before")
    @classmethod
    def _schema_from_none(cls, value: Any) -> Any:
        return {} if value is None else value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML (.yaml/.yml), TOML (.toml) or JSON file into a plain dict; no code is ever evaluated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, not {type(data).__name__}")
    return data


def format_validation_error(exc: ValidationError) -> str:
    """One line per error: the dotted field path and the reason."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"{where}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> ServiceConfig:
    """Load and validate the configuration; raises ConfigError listing every invalid field.

    ``overrides`` (from command-line flags) are merged last, over the file and the environment.
    """
    data = read_config_file(path) if path is not None else {}
    token = _FLAG_OVERRIDES.set(overrides or None)
    try:
        return ServiceConfig(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
    finally:
        _FLAG_OVERRIDES.reset(token)


def dump_config(config: ServiceConfig) -> str:
    """The resolved configuration as YAML, secrets masked."""
    data = json.loads(config.model_dump_json(by_alias=True))
    return yaml.safe_dump(data, sort_keys=False)


def environment_overrides() -> dict[str, str]:
    """The STREAMIMB_ variables that are set (names only matter for display)."""
    return {k: v for k, v in os.environ.items() if k.startswith("STREAMIMB_")}
