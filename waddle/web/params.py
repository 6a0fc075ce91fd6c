"""Query-string and path values, validated once: a value or a 400 naming the field."""

from __future__ import annotations

import math
from collections.abc import Collection

from starlette.requests import Request

from waddle.ids import ID_RULE, is_valid_id
from waddle.web.errors import bad_request

MAX_KEYS = 200
MAX_KEY_LENGTH = 512


def run_id(request: Request) -> str:
    value: str = request.path_params["run_id"]
    if not is_valid_id(value):
        raise bad_request(
            "invalid_id",
            f"invalid run id {value[:200]!r}: {ID_RULE}",
            field="run_id",
        )
    return value


def optional_id(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and not is_valid_id(value):
        raise bad_request("invalid_id", f"{name} is not a valid id: {value[:200]!r}", field=name)
    return value


def text(request: Request, name: str, limit: int = 512) -> str | None:
    value = request.query_params.get(name)
    if value is not None and (len(value) > limit or "\x00" in value):
        raise bad_request(
            "invalid_parameter", f"{name} must be text of at most {limit} characters", field=name
        )
    return value


def integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if raw.lstrip("-").isdigit() and len(raw) < 20 else None
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise bad_request(
            "invalid_parameter", f"{name} must be an integer from {low} to {high}", field=name
        )
    return value


def number(request: Request, name: str) -> float | None:
    """A finite number, or None when absent."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw) if len(raw) <= 64 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise bad_request("invalid_parameter", f"{name} must be a finite number", field=name)
    return value


def x_range(request: Request) -> tuple[float | None, float | None]:
    """``?x_min=&x_max=``: the part of the x axis a chart shows (either end open)."""
    low, high = number(request, "x_min"), number(request, "x_max")
    if low is not None and high is not None and low > high:
        raise bad_request("invalid_parameter", "x_min must not be above x_max", field="x_min")
    return low, high


def choice(request: Request, name: str, options: Collection[str], default: str) -> str:
    value = request.query_params.get(name, default)
    if value not in options:
        raise bad_request(
            "invalid_parameter", f"{name} must be one of {', '.join(options)}", field=name
        )
    return value


def sort(
    request: Request, columns: Collection[str], fields: Collection[str], default: str
) -> tuple[str, str | None]:
    """``?sort=``: one of ``columns``, or ``FIELD:KEY`` for a key of a JSON field (e.g.
    ``summary:val/acc``); the key is passed on as a value, never spliced into SQL."""
    value = request.query_params.get("sort", default)
    if value in columns:
        return value, None
    field, colon, key = value.partition(":")
    if colon and field in fields and key and len(key) <= MAX_KEY_LENGTH and "\x00" not in key:
        return field, key
    raise bad_request(
        "invalid_parameter",
        f"sort must be one of {', '.join(columns)}, or "
        f"{' or '.join(f + ':KEY' for f in fields)} (a key of at most {MAX_KEY_LENGTH} characters)",
        field="sort",
    )


def keys(request: Request) -> list[str] | None:
    """Metric keys from ``?keys=a,b`` and/or repeated ``?key=`` (for keys with commas)."""
    found = [k for raw in request.query_params.getlist("keys") for k in raw.split(",") if k]
    found += request.query_params.getlist("key")
    if not found:
        return None
    if len(found) > MAX_KEYS or any(len(k) > MAX_KEY_LENGTH or "\x00" in k for k in found):
        raise bad_request(
            "invalid_parameter",
            f"at most {MAX_KEYS} keys of at most {MAX_KEY_LENGTH} characters",
            field="keys",
        )
    return list(dict.fromkeys(found))
