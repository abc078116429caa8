"""Settings of the transports as frozen pydantic models, with no client library imported.

``streamimb.config`` builds its tree from these, so that loading a configuration (and the pure Processor,
which reads its part of it) never loads kafka-python or confluent-kafka. The clients live in
``streamimb.io.kafka``, ``streamimb.io.confluent`` and ``streamimb.io.prometheus``.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

if TYPE_CHECKING:
    from streamimb.io.prometheus import AlertmanagerSink, PrometheusSource

__all__ = [
    "AlertmanagerConfig",
    "ConsumerClient",
    "KafkaConfig",
    "PrometheusSourceConfig",
    "as_config",
    "check_url",
]

PRODUCER_OVERHEAD_BYTES = 64 * 1024  # record batch framing on top of key + value + headers
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # a Prometheus label name


def check_url(url: str) -> str:
    """An http(s) base URL without its trailing slash; a ``ValueError`` for anything else.

    >>> check_url("http://prometheus:9090/")
    'http://prometheus:9090'
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    return url.rstrip("/")


# -- Kafka ---------------------------------------------------------------------------------------------------
ConsumerClient = Literal["kafka-python", "confluent"]  # the libraries a source can consume with


class KafkaConfig(BaseModel):
    """Connection and client settings shared by the Kafka sources, :class:`~streamimb.io.kafka.KafkaSink` and
    the admin client.

    ``bootstrap_servers`` accepts a list or a comma-separated string. Secrets are ``SecretStr`` and are
    unwrapped only inside :meth:`client_kwargs`.

    >>> cfg = KafkaConfig(bootstrap_servers="k1:9092, k2:9093", group_id="fraud")
    >>> cfg.bootstrap_servers
    ['k1:9092', 'k2:9093']
    >>> sasl = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
    ...                    sasl_username="svc", sasl_password="hunter2")
    >>> "hunter2" in repr(sasl)
    False
    >>> sasl.client_kwargs()["sasl_plain_password"]
    'hunter2'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: list[str] = Field(default_factory=lambda: ["localhost:9092"])
    client: ConsumerClient = Field(
        "kafka-python",
        description="The consumer's client library: 'confluent' (librdkafka, `pip install "
        "'streamimb[confluent]'`) parses records in C and gives more end-to-end throughput than kafka-python "
        "(measured in benchmarks/results/throughput.md); producers stay on kafka-python.",
    )
    client_id: str = "streamimb"
    group_id: str = "streamimb"
    events_topic: str = "events"
    labels_topic: str | None = None
    alerts_topic: str = "alerts"
    dead_letter_topic: str = "dead-letters"

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None

    session_timeout_ms: int = Field(10_000, gt=0)
    heartbeat_interval_ms: int = Field(1_000, gt=0)
    max_poll_records: int = Field(500, gt=0)
    poll_timeout_ms: int = Field(500, ge=0)
    max_partition_fetch_bytes: int = Field(1_048_576, gt=0)
    fetch_max_bytes: int = Field(52_428_800, gt=0)
    max_message_bytes: int = Field(1_000_000, gt=0)
    request_timeout_ms: int = Field(30_000, gt=500)
    retry_backoff_ms: int = Field(100, gt=0)
    retry_backoff_max_ms: int = Field(5_000, gt=0)
    max_retries: int = Field(5, ge=0)
    delivery_timeout_ms: int = Field(30_000, gt=0)
    max_block_ms: int = Field(10_000, gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    commit_interval_ms: int = Field(
        1_000,
        ge=0,
        description="Without checkpoints, commit the processed offsets (once the outputs they cover are "
        "acknowledged) when this long has passed since the last commit, and when idle, on revoke and at "
        "shutdown; 0 commits after every batch.",
    )

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            value = [str(v).strip() for v in value if str(v).strip()]
            if not value:
                raise ValueError("at least one bootstrap server is required")
        return value

    @model_validator(mode="after")
    def _check(self) -> KafkaConfig:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be lower than session_timeout_ms")
        if self.retry_backoff_max_ms < self.retry_backoff_ms:
            raise ValueError("retry_backoff_max_ms must be >= retry_backoff_ms")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError(
                    f"sasl_mechanism is required with security_protocol={self.security_protocol}"
                )
            if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
                not self.sasl_username or self.sasl_password is None
            ):
                raise ValueError(f"sasl_username and sasl_password are required for {self.sasl_mechanism}")
        elif self.sasl_mechanism is not None:
            raise ValueError("sasl_mechanism is set but security_protocol is not SASL_PLAINTEXT/SASL_SSL")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments accepted by kafka-python's consumer, producer and admin client alike.

        Secrets are unwrapped here and nowhere else; do not log the result.
        """
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "reconnect_backoff_max_ms": self.retry_backoff_max_ms,
            "bootstrap_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_username is not None:
                kwargs["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        if self.ssl_password is not None:
            kwargs["ssl_password"] = self.ssl_password.get_secret_value()
        return kwargs

    def consumer_kwargs(self) -> dict[str, Any]:
        """:meth:`client_kwargs` plus the consumer-group settings (manual commits, eager assignor)."""
        return {
            **self.client_kwargs(),
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": self.auto_offset_reset,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_poll_records": self.max_poll_records,
            "max_partition_fetch_bytes": self.max_partition_fetch_bytes,
            "fetch_max_bytes": self.fetch_max_bytes,
        }

    def producer_kwargs(self, linger_ms: int = 5) -> dict[str, Any]:
        """:meth:`client_kwargs` plus durable producer settings (``acks=all``, bounded delivery time)."""
        return {
            **self.client_kwargs(),
            "acks": "all",
            "linger_ms": linger_ms,
            "delivery_timeout_ms": max(self.delivery_timeout_ms, self.request_timeout_ms + linger_ms),
            "max_block_ms": self.max_block_ms,
            "max_request_size": max(1_048_576, self.max_message_bytes + PRODUCER_OVERHEAD_BYTES),
        }


def as_config(config: KafkaConfig | str | Sequence[str], **overrides: Any) -> KafkaConfig:
    """``config`` as a :class:`KafkaConfig` (a bootstrap address or a list of them), with ``overrides``."""
    if isinstance(config, KafkaConfig):
        return config.model_copy(update=overrides) if overrides else config
    return KafkaConfig(bootstrap_servers=config if isinstance(config, str) else list(config), **overrides)


# -- Prometheus and Alertmanager -----------------------------------------------------------------------------
class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AlertmanagerConfig(_Frozen):
    """Where and how alerts are posted to Alertmanager.

    >>> AlertmanagerConfig(url="http://127.0.0.1:9093", labels={"team": "fraud"}).build().labels
    {'team': 'fraud'}
    """

    kind: Literal["alertmanager"] = "alertmanager"
    url: str = Field(description="Alertmanager base URL, e.g. http://alertmanager:9093.")
    labels: dict[str, str] = Field(default_factory=dict, description="Static labels on every alert.")
    alertname: str = Field("StreamimbDetection", min_length=1)
    severity: str = Field("warning", min_length=1)
    resolve_after_seconds: float = Field(300.0, gt=0, description="An alert ends this long after it is sent.")
    timeout: float = Field(5.0, gt=0, description="Seconds per HTTP request.")
    max_retries: int = Field(3, ge=0)
    backoff: float = Field(0.5, ge=0, description="First retry delay; doubles each retry.")
    batch_size: int = Field(100, ge=1, description="Alerts per POST.")
    generator_url: str | None = Field(None, description="Link shown with each alert.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not LABEL_NAME.match(k)]
        if bad:
            raise ValueError(f"invalid label names {bad}")
        return value

    def build(self) -> AlertmanagerSink:
        from streamimb.io.prometheus import AlertmanagerSink

        return AlertmanagerSink.from_config(self)


class PrometheusSourceConfig(_Frozen):
    """PromQL queries polled from Prometheus's HTTP API."""

    kind: Literal["prometheus"] = "prometheus"
    url: str = Field(description="Prometheus base URL, e.g. http://prometheus:9090.")
    queries: tuple[str, ...] = Field(
        min_length=1, description="PromQL expressions; each result series is a stream."
    )
    interval_seconds: float = Field(15.0, gt=0, description="Seconds between polls.")
    lookback_seconds: float = Field(0.0, ge=0, description="History read at start (range query).")
    step: float | None = Field(None, gt=0, description="Evaluation grid in seconds; the interval when unset.")
    max_series: int = Field(1000, ge=1, description="Streams followed at most; extra ones are dropped.")
    delay_seconds: float = Field(0.0, ge=0, description="Evaluate this far behind now, for late scrapes.")
    timeout: float = Field(10.0, gt=0)
    max_retries: int = Field(2, ge=0)
    backoff: float = Field(0.5, ge=0)
    drop_non_finite: bool = Field(True, description="Skip NaN, infinite and non-numeric values.")
    stale_after_seconds: float | None = Field(None, gt=0, description="Forget streams unseen this long.")
    max_consecutive_failures: int = Field(10, ge=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("queries")
    @classmethod
    def _queries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not q.strip() for q in value):
            raise ValueError("queries must not be empty")
        return value

    def build(self) -> PrometheusSource:
        from streamimb.io.prometheus import PrometheusSource

        return PrometheusSource.from_config(self)
