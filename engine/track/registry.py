"""The official SAM 2.1 checkpoints that ``streamseg fetch NAME`` can download.

Meta publishes these files without checksums (neither the sam2 repository's download script nor its
README lists a digest), so ``sha256`` is None: ``engine.weights.fetch`` then prints the digest of what it
downloaded so a user can pin it with ``--sha256``. A digest seen only on third-party pages is not pinned.
"""

from __future__ import annotations

from engine.weights import KnownWeights, register

_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"

TRACKER_WEIGHTS: tuple[KnownWeights, ...] = tuple(
    register(KnownWeights(
        name=f"sam2.1_hiera_{size}",
        url=f"{_BASE_URL}/sam2.1_hiera_{size}.pt",
        sha256=None,  # not published by Meta (see the module docstring)
        filename=f"sam2.1_hiera_{size}.pt",
        kind="tracker",
        config=f"configs/sam2.1/sam2.1_hiera_{short}.yaml",
    ))
    for size, short in (("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l"))
)


def official_checkpoint(name_or_config: str) -> KnownWeights | None:
    """The official checkpoint of tracker ``name_or_config`` (a short name or a sam2 config), if any."""
    from engine.track.config import resolve_model_config

    config = resolve_model_config(name_or_config)
    return next((w for w in TRACKER_WEIGHTS if w.config == config), None)
