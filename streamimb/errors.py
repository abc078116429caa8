"""Exceptions: one root, one subclass per subsystem."""

from __future__ import annotations


class StreamimbError(Exception):
    """Root of every error streamimb raises on purpose."""


class ConfigError(StreamimbError):
    """The configuration is invalid; the message names each field and reason."""


class DecodeError(StreamimbError):
    """A record could not be turned into an Event; `reason` is a short, bounded label for metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SourceError(StreamimbError):
    """A source (file, Kafka, Prometheus) failed."""


class BrokerAuthError(SourceError):
    """The broker refused this client's credentials or permissions: retrying will not help."""


class SinkError(StreamimbError):
    """A sink (alerts topic, file, Alertmanager) failed to deliver."""


class CheckpointError(StreamimbError):
    """A snapshot could not be written, or was refused on restore."""


class BrokerError(StreamimbError):
    """The embedded broker could not start or stop."""
