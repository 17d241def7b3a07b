"""What the live-UI and compose tests ask Dagster's GraphQL API, and how they read its answers."""

from __future__ import annotations

import json

LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
} }"""

BACKFILL_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions partitionNames error { message }
                               runs(limit: 50) { runId status tags { key value } } }
    ... on PythonError { message }
} }"""


def key(name: str) -> dict:
    return {"path": [name]}


def metadata(event: dict) -> dict:
    """A materialization's metadata entries by label (their scalar, text, path, URL or parsed JSON value)."""
    values = {}
    for entry in event["metadataEntries"]:
        for field in ("intValue", "floatValue", "text", "path", "url"):
            if field in entry:
                values[entry["label"]] = entry[field]
        if "jsonString" in entry:
            values[entry["label"]] = json.loads(entry["jsonString"])
    return values
