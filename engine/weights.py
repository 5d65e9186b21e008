"""Explicit weights: a file by path, or a known model name fetched on request with a checksum.

Nothing here runs at import and nothing downloads implicitly: ``fetch`` is called by
``streamseg fetch NAME`` only. A download is written to ``NAME.part`` beside its target, checked against
its SHA-256, and renamed into place only when the digest matches, so an interrupted or tampered download
never leaves a file that looks valid.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DownloadError, WeightsError

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class KnownWeights:
    """An official weights file that ``streamseg fetch`` can download."""

    name: str  # what users type: "yolov8n-seg", "sam2.1_hiera_tiny"
    url: str
    sha256: str | None  # hex digest; None where no published digest could be confirmed (see fetch)
    filename: str
    kind: str  # "detector" or "tracker"
    config: str | None = None  # the model config that goes with it (sam2 checkpoints)


# Filled by each detector family (engine.detect.yolo.weights) and engine.track.registry through
# register(); kept in one table so `streamseg fetch --list` shows every model.
KNOWN_WEIGHTS: dict[str, KnownWeights] = {}


def register(entry: KnownWeights) -> KnownWeights:
    if entry.name in KNOWN_WEIGHTS and KNOWN_WEIGHTS[entry.name] != entry:
        raise ValueError(f"weights name {entry.name!r} registered twice with different entries")
    KNOWN_WEIGHTS[entry.name] = entry
    return entry


RANDOM = "random"  # what a user passes for random weights built from the model's config


def resolve_weights(given: str | Path | None, *, model: str, what: str, option: str,
                    official: KnownWeights | None = None, fallback: bool = False,
                    notes: list[str] | None = None) -> str:
    """The weights to load for ``model``, from what the user gave:

    - ``"random"``: random weights built from the model's config;
    - a path: that file (its loader reports a missing or unreadable one);
    - a known name (``streamseg fetch --list``): its file in the cache, or a WeightsError saying to fetch it;
    - nothing: ``official``'s file in the cache; without one, ``"random"`` when ``fallback`` (the demo;
      noted in ``notes``), else a WeightsError saying how to get weights.
    """
    if given is not None:
        text = str(given)
        known = KNOWN_WEIGHTS.get(text)
        if text == RANDOM or known is None or Path(text).exists():
            return text
        cached = cache_dir() / known.filename
        if not cached.is_file():
            raise WeightsError(f"{text}: not downloaded yet; run 'streamseg fetch {text}' first (it goes to "
                               f"{cached}), or pass {option} PATH")
        return str(cached)
    if official is not None:
        cached = cache_dir() / official.filename
        if cached.is_file():
            return str(cached)
    hint = (f"run 'streamseg fetch {official.name}' on a machine that is online" if official is not None
            else f"pass {option} PATH")
    if fallback:
        if notes is not None:
            notes.append(f"no trained {what} weights found ({hint}); using random weights")
        return RANDOM
    raise WeightsError(f"no trained weights for {what} {model!r}: {hint}, or pass {option} PATH, "
                       f"or {option} random to run on meaningless random weights")


def cache_dir() -> Path:
    """Where fetched weights go: $STREAMSEG_CACHE, else $XDG_CACHE_HOME/streamseg, else ~/.cache/streamseg."""
    if env := os.environ.get("STREAMSEG_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamseg"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, dest: Path, *, sha256: str | None, timeout: float = 30.0,
          progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and check its SHA-256. Returns ``dest``.

    An existing ``dest`` with the right digest is kept without a download. ``sha256=None`` is allowed
    only when the caller has decided to trust the server (``streamseg fetch --sha256 HEX`` is the way to
    pin one); the digest is then printed so it can be pinned next time.
    """
    dest = Path(dest)
    if dest.exists() and sha256 is not None and sha256_of(dest) == sha256.lower():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {dest.parent}: {exc.strerror}; choose another --dir") from None
    part = dest.with_name(dest.name + ".part")
    try:
        digest = _download(url, part, timeout=timeout, progress=progress)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if sha256 is not None and digest != sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: checksum mismatch (got sha256 {digest}, expected {sha256.lower()}); the download "
            "was discarded. Retry, or check that the URL serves the file you expect."
        )
    os.replace(part, dest)
    if sha256 is None:
        print(f"{dest}: sha256 {digest} (pin it with --sha256 {digest})", file=sys.stderr)
    return dest


def _download(url: str, part: Path, *, timeout: float, progress: bool) -> str:
    digest = hashlib.sha256()
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (explicit user request)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: the server answered HTTP {exc.code} ({exc.reason}); check the URL") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"{url}: cannot connect ({reason}); check the address and that this machine is online, "
            "or pass a weights file by path"
        ) from None
    total = int(response.headers.get("Content-Length") or 0) or None
    bar = _progress_bar(total, part.name[:-5], enabled=progress)
    received = 0
    try:
        with response, open(part, "wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except (TimeoutError, OSError) as exc:
        raise DownloadError(f"{url}: download broke off after {received} bytes ({exc}); retry") from None
    finally:
        bar.close()
    if total is not None and received != total:
        raise DownloadError(f"{url}: download ended after {received} of {total} bytes; retry")
    return digest.hexdigest()


def _progress_bar(total: int | None, label: str, *, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                disable=not enabled, file=sys.stderr, leave=False)
