"""Log lines carry the job id they concern, as text or JSON."""

import json
import logging

from app.logs import JobIdFilter, JsonFormatter, KeyValueFormatter, job_log_context


def _format(formatter, message="hello"):
    record = logging.LogRecord("tailor.test", logging.INFO, __file__, 1, message, None, None)
    JobIdFilter().filter(record)
    return formatter.format(record)


def test_text_lines_name_the_job_inside_its_context_only():
    with job_log_context(42):
        inside = _format(KeyValueFormatter())
    outside = _format(KeyValueFormatter())
    assert " job=42 hello" in inside and " job=- hello" in outside


def test_json_lines_carry_the_job_id():
    with job_log_context(7):
        entry = json.loads(_format(JsonFormatter(), "trained"))
    assert entry["job_id"] == 7 and entry["message"] == "trained" and entry["level"] == "INFO"
