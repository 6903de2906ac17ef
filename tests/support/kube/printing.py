"""Server-side printing: the ``Table`` kubectl asks for, from a CRD's printer columns.

Why: ``kubectl get`` asks the server for a Table (``Accept: ...;as=Table``) and prints its
columns as they are; the operator's CRDs declare ``additionalPrinterColumns`` (phase, last
backup, age) whose output users see, so tests check it. This module renders those columns with
the JSONPath subset they use and kube's HumanDuration for ``date`` columns. Built-in kinds get
no Table (kubectl then prints NAME/AGE itself).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from .errors import JsonDict
from .resources import ResourceType

NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace.",
}


def table(
    rt: ResourceType, items: list[JsonDict], params: Mapping[str, str], resource_version: int
) -> JsonDict:
    """Server-side printing of custom resources (``additionalPrinterColumns``), for kubectl."""
    columns = rt.printer_columns or [
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]
    rows = []
    for obj in items:
        cells: list[Any] = [obj["metadata"]["name"]]
        for column in columns:
            value = jsonpath(obj, column["jsonPath"])
            if column.get("type") == "date" and isinstance(value, str):
                value = human_age(value)
            cells.append(value)
        if params.get("includeObject") == "Object":
            row_obj = obj
        else:
            row_obj = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append({"cells": cells, "object": row_obj})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(resource_version)},
        "columnDefinitions": [dict(NAME_COLUMN)]
        + [
            {
                "name": c["name"],
                "type": c.get("type", "string"),
                "format": c.get("format", ""),
                "description": c.get("description", ""),
                "priority": c.get("priority", 0),
            }
            for c in columns
        ],
        "rows": rows,
    }


def jsonpath(obj: Any, path: str) -> Any:
    """The JSONPath subset printer columns use: ``.a.b``, ``[0]``, ``['k']``, ``[?(@.t=="x")]``."""
    tokens = re.findall(
        r"\.([A-Za-z0-9_-]+)|\[(\d+)\]|\['([^']+)'\]|\[\?\(@\.(\w+)==[\"']([^\"']*)[\"']\)\]",
        path.strip("{}"),
    )
    value = obj
    for key, index, quoted, filter_key, filter_value in tokens:
        if value is None:
            return None
        if key or quoted:
            value = value.get(key or quoted) if isinstance(value, dict) else None
        elif index:
            value = (
                value[int(index)] if isinstance(value, list) and len(value) > int(index) else None
            )
        else:
            matches = (
                [
                    v
                    for v in value or []
                    if isinstance(v, dict) and str(v.get(filter_key)) == filter_value
                ]
                if isinstance(value, list)
                else []
            )
            value = matches[0] if matches else None
    return value


def human_age(timestamp: str) -> str:
    """Kubernetes' HumanDuration of the time since ``timestamp`` (what ``kubectl get`` shows)."""
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    seconds = max(0, int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days < 365 * 8 else f"{days // 365}y"
