"""Official YOLOv8-seg weights that ``streamseg fetch NAME`` can download (explicitly, never implicitly).

URLs are Ultralytics' GitHub release assets at the tag its own downloader uses
(``attempt_download_asset(release="v8.4.0")`` in ultralytics 8.4.190, ``ultralytics/utils/downloads.py``).
Ultralytics publishes no SHA-256 digest for these files in its docs, so ``sha256`` is None:
``engine.weights.fetch`` then prints the digest of what it downloaded so it can be pinned with ``--sha256``.
"""

from __future__ import annotations

from engine.weights import KnownWeights, register

RELEASE_URL = "https://github.com/ultralytics/assets/releases/download/v8.4.0"
SCALES = ("n", "s", "m", "l", "x")

DETECTOR_WEIGHTS = tuple(
    register(KnownWeights(name=f"yolov8{scale}-seg", url=f"{RELEASE_URL}/yolov8{scale}-seg.pt", sha256=None,
                          filename=f"yolov8{scale}-seg.pt", kind="detector"))
    for scale in SCALES
)
