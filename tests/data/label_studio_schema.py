"""Label Studio's documented import format for image tasks with PolygonLabels pre-annotations, as a JSON
schema, and the checks that tie a task file to its labelling config.

Transcribed from Label Studio's documentation (label-studio repository, docs/source/guide/predictions.md:
"JSON format for pre-annotations" and its table of keys; docs/source/tags/polygonlabels.md: "Sample Results
JSON"). label-studio-sdk, which validates tasks against a config itself, is not a test dependency: it pins
numpy and OpenCV below the versions this project runs.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

_NUMBER = {"type": "number"}
_PERCENT = {"type": "number", "minimum": 0, "maximum": 100}

POLYGON_RESULT = {
    "type": "object",
    "required": ["id", "type", "from_name", "to_name", "original_width", "original_height", "value"],
    "properties": {
        "id": {"type": "string", "minLength": 1},  # "Arbitrary string used to identify a labeled region"
        "type": {"const": "polygonlabels"},  # "the labeling tag for the type of labeling"
        "from_name": {"type": "string"},  # the control tag's name in the config
        "to_name": {"type": "string"},  # the object tag's name in the config
        "original_width": {"type": "number", "exclusiveMinimum": 0},  # px
        "original_height": {"type": "number", "exclusiveMinimum": 0},
        "image_rotation": _NUMBER,  # degrees
        "readonly": {"type": "boolean"},
        "hidden": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "value": {
            "type": "object",
            "required": ["points", "polygonlabels"],
            "properties": {
                # "list of (x, y) coordinates of the polygon by percentage of the image size (0-100)"
                "points": {"type": "array", "minItems": 3,
                           "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": _PERCENT}},
                "polygonlabels": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            },
        },
    },
}

TASK = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "object"},  # references the data each object tag's $value names
        "predictions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["result"],
                "properties": {
                    "model_version": {"type": "string"},
                    "score": {"type": "number", "minimum": 0, "maximum": 1},
                    "result": {"type": "array", "items": POLYGON_RESULT},
                },
            },
        },
    },
}

TASKS = {"type": "array", "items": TASK}


def config_problems(config_xml: str, tasks: list[dict]) -> list[str]:
    """What in ``tasks`` does not match the labelling config: each result's from_name must name a
    PolygonLabels control whose toName is the result's to_name, an Image of that name must exist, its
    ``$value`` key must be in the task's data, and every label must be one of the control's Labels."""
    root = ET.fromstring(config_xml)
    images = {el.get("name"): el.get("value", "") for el in root.iter("Image")}
    controls = {el.get("name"): (el.get("toName"), {lab.get("value") for lab in el.iter("Label")})
                for el in root.iter("PolygonLabels")}
    problems = []
    for t, task in enumerate(tasks):
        for name, value in images.items():
            if value.startswith("$") and value[1:] not in task["data"]:
                problems.append(f"task {t}: data lacks {value[1:]!r} for Image {name!r}")
        for prediction in task.get("predictions", []):
            ids = [r["id"] for r in prediction["result"]]
            if len(set(ids)) != len(ids):
                problems.append(f"task {t}: result ids repeat")  # "You must use different IDs"
            for r in prediction["result"]:
                if r["from_name"] not in controls:
                    problems.append(f"task {t}: from_name {r['from_name']!r} is no PolygonLabels in the config")
                    continue
                to_name, labels = controls[r["from_name"]]
                if r["to_name"] != to_name or to_name not in images:
                    problems.append(f"task {t}: to_name {r['to_name']!r} is not the control's Image")
                unknown = set(r["value"]["polygonlabels"]) - labels
                if unknown:
                    problems.append(f"task {t}: labels {sorted(unknown)} are not in the config")
    return problems
