"""The records that flow through streamimb: events in, verdicts, alerts, drifts and dead letters out.

Events and verdicts are plain slotted dataclasses because they sit on the per-event hot path; alerts and
dead letters are serialised to JSON at the edges.

>>> e = Event(id="tx-1", time=0.0, features={"amount": 12.5, "country": "FR"}, label="0")
>>> e.features["amount"]
12.5
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

FeatureValue = float | str | None


@dataclass(slots=True)
class Event:
    """One decoded record: an id, an event time (epoch seconds or position), features, maybe a label."""

    id: str
    time: float | None
    features: dict[str, FeatureValue]
    label: str | None = None
    key: str | None = None
    source: str = ""
    partition: int = -1
    offset: int = -1


@dataclass(slots=True)
class Label:
    """A label that arrives after its event (a chargeback, a churn outcome)."""

    event_id: str
    label: str
    time: float | None = None


@dataclass(slots=True)
class DriftEvent:
    """A change detected on a named signal (`score`, `error`, `prevalence:<class>`, `feature:<name>`)."""

    index: int
    signal: str
    detector: str
    time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Verdict:
    """What the Processor decided about one event, before its label is known."""

    event_id: str
    index: int
    time: float | None
    anomaly_score: float
    anomaly_alert: bool
    proba: dict[str, float] = field(default_factory=dict)
    predicted: str | None = None
    classifier_alert: bool = False
    reason: str = ""  # why it alerts; empty where it does not
    scores: dict[str, float] = field(default_factory=dict)
    x: dict[str, float] = field(default_factory=dict, repr=False)
    keys: dict[str, str] | None = field(default=None, repr=False)  # its entity keys (``schema.entities``)

    @property
    def alert(self) -> bool:
        return self.anomaly_alert or self.classifier_alert


@dataclass(slots=True)
class Alert:
    """An alert as published to sinks. `alert_id` is deterministic so that duplicates can be dropped."""

    alert_id: str
    event_id: str
    time: float | None
    rule: str
    reason: str
    anomaly_score: float
    proba: dict[str, float]
    predicted: str | None
    model_version: str
    source: str = ""
    partition: int = -1
    offset: int = -1

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False, default=str)


@dataclass(slots=True)
class DeadLetter:
    """A record that could not be processed, kept with its raw bytes and the reason."""

    reason: str
    detail: str
    raw: bytes
    source: str = ""
    partition: int = -1
    offset: int = -1
    row: int = -1

    def to_json(self) -> str:
        payload = asdict(self)
        payload["raw"] = base64.b64encode(self.raw).decode("ascii")
        return json.dumps(payload, separators=(",", ":"))
