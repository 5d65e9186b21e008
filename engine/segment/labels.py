"""Label sets: what each output channel of a semantic model means, and which classes are "stuff".

A label set lists the model's classes in output-channel order. Each class is either *stuff* (amorphous
regions counted by area: road, sky, vegetation) or a *thing* (countable objects that the detector and
tracker give instances for: person, car). Panoptic fusion keeps stuff from the semantic map and takes
things from the tracked instances; PQ and STQ score the two kinds differently.

The default is Cityscapes' 19 evaluation classes ("trainIds" 0-18, Cordts et al. 2016), 11 stuff and
8 things, in the order every Cityscapes-trained model emits them.

A user label file is either

- JSON: a list of objects, one per class in channel order, in the style of COCO panoptic's
  ``categories``: ``[{"name": "road", "isthing": 0}, {"name": "car", "isthing": 1, "id": 26,
  "color": [0, 0, 142]}, ...]``. ``name`` and ``isthing`` (0/1 or false/true) are required; ``id`` is
  the category id written to COCO panoptic files (default: position + 1) and ``color`` an RGB triple
  (default: a fixed palette); or
- text: one class per line in channel order, ``stuff NAME`` or ``thing NAME`` (the name may contain
  spaces); empty lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError

_CITYSCAPES = (  # (name, isthing, Cityscapes label id, colour): the official trainId table
    ("road", False, 7, (128, 64, 128)), ("sidewalk", False, 8, (244, 35, 232)),
    ("building", False, 11, (70, 70, 70)), ("wall", False, 12, (102, 102, 156)),
    ("fence", False, 13, (190, 153, 153)), ("pole", False, 17, (153, 153, 153)),
    ("traffic light", False, 19, (250, 170, 30)), ("traffic sign", False, 20, (220, 220, 0)),
    ("vegetation", False, 21, (107, 142, 35)), ("terrain", False, 22, (152, 251, 152)),
    ("sky", False, 23, (70, 130, 180)), ("person", True, 24, (220, 20, 60)),
    ("rider", True, 25, (255, 0, 0)), ("car", True, 26, (0, 0, 142)), ("truck", True, 27, (0, 0, 70)),
    ("bus", True, 28, (0, 60, 100)), ("train", True, 31, (0, 80, 100)),
    ("motorcycle", True, 32, (0, 0, 230)), ("bicycle", True, 33, (119, 11, 32)),
)


@dataclass(frozen=True, slots=True)
class LabelSet:
    """A semantic model's classes in output-channel order."""

    names: tuple[str, ...]  # [C] class name per channel
    is_thing: tuple[bool, ...]  # [C] True for countable things, False for stuff
    category_ids: tuple[int, ...]  # [C] ids written to COCO panoptic files; distinct, > 0
    colors: tuple[tuple[int, int, int], ...]  # [C] RGB for overlays and COCO categories
    source: str = "cityscapes"  # where the set came from (a file path, or "cityscapes")

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0:
            raise ConfigError(f"label set {self.source} lists no classes")
        if not len(self.is_thing) == len(self.category_ids) == len(self.colors) == n:
            raise ConfigError(f"label set {self.source}: names, kinds, ids and colours differ in length")
        if len(set(self.category_ids)) != n or min(self.category_ids) < 1:
            raise ConfigError(f"label set {self.source}: category ids must be distinct and positive, "
                              f"got {list(self.category_ids)}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        """Class indices (channels) of the stuff classes."""
        return tuple(i for i, thing in enumerate(self.is_thing) if not thing)

    @property
    def thing_ids(self) -> tuple[int, ...]:
        """Class indices (channels) of the thing classes."""
        return tuple(i for i, thing in enumerate(self.is_thing) if thing)

    def coco_categories(self) -> list[dict]:
        """The set as COCO panoptic ``categories`` (id, name, supercategory, isthing, color)."""
        return [{"id": cid, "name": name, "supercategory": "thing" if thing else "stuff",
                 "isthing": int(thing), "color": list(color)}
                for name, thing, cid, color in zip(self.names, self.is_thing, self.category_ids, self.colors)]


CITYSCAPES = LabelSet(names=tuple(c[0] for c in _CITYSCAPES), is_thing=tuple(c[1] for c in _CITYSCAPES),
                      category_ids=tuple(c[2] for c in _CITYSCAPES), colors=tuple(c[3] for c in _CITYSCAPES))


def palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """``n`` distinct, fixed colours (hues spread by the golden ratio)."""
    colours = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.9)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return tuple(colours)


def load_labels(path: str | Path) -> LabelSet:
    """Read a label file (JSON or text; the module docstring gives both formats).

    Raises:
        ConfigError: the file is missing, unreadable, or not in either format; the message names the
            file and the line or entry at fault.
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"label file {path}: cannot read it ({reason}); pass a JSON or text label file") from None
    if file.suffix.lower() == ".json" or text.lstrip().startswith("["):
        return _from_json(text, str(path))
    return _from_text(text, str(path))


def _from_json(text: str, source: str) -> LabelSet:
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"label file {source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(entries, list):
        raise ConfigError(f"label file {source}: expected a JSON list of {{\"name\", \"isthing\"}} objects")
    names, things, ids, colors = [], [], [], []
    default_colors = palette(len(entries))
    for i, entry in enumerate(entries):
        ok = isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry.get("isthing") in (
            0, 1, True, False)
        cid, color = (entry.get("id", i + 1), entry.get("color", default_colors[i])) if ok else (None, None)
        if not ok or isinstance(cid, bool) or not isinstance(cid, int) or not _is_rgb(color):
            raise ConfigError(f"label file {source}: entry {i} ({json.dumps(entry)[:80]}) needs \"name\" "
                              "(text) and \"isthing\" (0 or 1), and optionally an integer \"id\" and an "
                              "RGB \"color\"")
        names.append(entry["name"])
        things.append(bool(entry["isthing"]))
        ids.append(cid)
        colors.append(tuple(int(c) for c in color))
    return LabelSet(names=tuple(names), is_thing=tuple(things), category_ids=tuple(ids), colors=tuple(colors),
                    source=source)


def _from_text(text: str, source: str) -> LabelSet:
    names, things = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, name = line.partition(" ")
        if kind not in ("stuff", "thing") or not name.strip():
            raise ConfigError(f"label file {source}, line {number} ({line[:60]!r}): write 'stuff NAME' or "
                              "'thing NAME', one class per line in the model's channel order")
        names.append(name.strip())
        things.append(kind == "thing")
    return LabelSet(names=tuple(names), is_thing=tuple(things), category_ids=tuple(range(1, len(names) + 1)),
                    colors=palette(len(names)), source=source)


def _is_rgb(value) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value))
