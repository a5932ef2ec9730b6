"""Credentials out of everything raysel saves or prints: `user:pass@` in URLs, values of credential env vars.

An endpoint such as `https://user:pass@minio.internal:9000` works as given, but the saved
configs (`<out>.config.json`, the store's `_config.json`, a simulation's `config.yaml`, a pretext
run's `_config.json`), error lines and log lines carry `https://***@minio.internal:9000`.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|ACCESS_KEY|PRIVATE|API_KEY|SESSION", re.I)
URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
REDACTED = "***"


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of env vars named like credentials (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, ...), longest first."""
    environ = os.environ if environ is None else environ
    values = {value for name, value in environ.items() if SECRET_NAME.search(name) and len(value) >= 4}
    return sorted(values, key=len, reverse=True)


def redact(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of `value` (str, dict, list, nested) fit for a file or a log line."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {key: redact(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, secrets) for item in value]
    if isinstance(value, str):
        value = URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", value)
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message (installed on the CLI's handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True
