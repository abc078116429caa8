"""The log handler follows sys.stderr: a swapped and closed stderr never turns a log line into a traceback."""

from __future__ import annotations

import io
import logging
import sys

from streamimb.logs import setup_logging


def test_log_lines_go_to_the_current_stderr(monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging("text", "INFO")
    logging.getLogger("streamimb.test").info("one")
    first.close()  # as a test runner closes the capture of a finished test
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("streamimb.test").info("two")
    assert second.getvalue().rstrip().endswith("INFO streamimb.test: two")
    assert "Logging error" not in second.getvalue()
    logging.getLogger().handlers.clear()
