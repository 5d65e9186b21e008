"""An int8 YOLOv8-seg for the CPU: ONNX Runtime static quantisation (QDQ) of the fp32 ONNX export,
calibrated on real frames, checked against the fp32 model, cached.

What is quantised: every convolution and activation of the backbone, neck, detection branches and
prototype head, with per-channel int8 weights, uint8 activations (ONNX Runtime's U8S8 kernels, which
use VNNI / AMX-INT8 where the CPU has them) and MinMax calibration. On an x86 CPU without int8 dot
products (AVX2 or AVX-512 without VNNI) ONNX Runtime multiplies U8S8 with ``VPMADDUBSW``, whose 16-bit
pair sums saturate; its quantisation guide's remedy is 7-bit weights (``reduce_range``), which this
module uses there: on the spread random YOLOv8n-seg at 160 px, an AVX2-only EPYC, 15 validation frames
of the demo clip, recall of fp32 detections 0.617 with 8-bit weights and 0.988 with 7-bit (box IoU 0.880
and 0.965). The model is made for the CPU it runs on (the cache key says which kind).

The head's decoding stays fp32: the DFL softmax, anchors, strides and the concatenation of boxes, scores and mask coefficients, because it
computes pixel coordinates, which 8 bits over a 640-pixel range would round by 2.5 pixels.

Calibration and validation frames (``calibration_frames``): a video, by default the clip bundled with
the engine for the demo (``engine/data/bedroom_demo.mp4``: 90 real frames of an indoor scene, 640x360).
Every 6th frame from frame 0 calibrates (15 frames); every 6th frame from frame 3 validates, so the frames
that set the ranges are not the frames that judge them. A user with other scenes passes their own clip
(``DetectorConfig.calibration``).

The accuracy bar (``INT8_BAR``, ``agreement``): against the fp32 model on the validation frames, with the
detector's own thresholds, each fp32 detection matched one to one (Hungarian on box IoU, same class, IoU
>= 0.5): recall of fp32 detections >= 0.95, mean box IoU of the matched >= 0.95, mean mask IoU >= 0.95.
Random weights do not meet it (their masks are noise around logit 0, which any rounding flips:
measured on the spread random yolov8n-seg and the demo clip's validation frames: recall 0.99, box IoU
0.94, mask IoU 0.83), so the engine
never picks the int8 model by itself for them; a user can still ask for it (``backend="onnxruntime-int8"``).

Cache: ``cache_dir()/detector-int8/<digest>/`` holds ``model.onnx`` (the int8 model) and one
``accuracy-*.json`` per threshold setting; the digest covers the fp32 ONNX's bytes, the calibration
clip's bytes, the input size, these settings and the onnxruntime version. Files appear whole or not at
all (written to a temporary name, then renamed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import BackendError, ConfigError
from engine.runtime import precision
from engine.types import Detections

log = logging.getLogger(__name__)

_SCHEME = "qdq-u8s8-perchannel-minmax-v1"  # changes whenever what quantize() does changes
_CALIBRATION_STEP = 6  # every 6th frame: 15 of the demo clip's 90 calibrate, 15 others validate
_VALIDATION_OFFSET = 3


def _scheme() -> str:
    """``_SCHEME``, with "-7bit" where this CPU needs 7-bit weights (no int8 dot products; see above)."""
    return f"{_SCHEME}-7bit" if _reduce_range() else _SCHEME


def _reduce_range() -> bool:
    """7-bit weights: where the CPU has no int8 dot products (VNNI, AMX-INT8; ARM's dot product), whose
    absence makes ONNX Runtime's U8S8 kernels saturate 8-bit weights."""
    return not precision.cpu_int8_features()


@dataclass(frozen=True, slots=True)
class AccuracyBar:
    recall: float = 0.95  # fp32 detections the int8 model finds again (same class, box IoU >= match_iou)
    box_iou: float = 0.95  # mean box IoU of the matched pairs
    mask_iou: float = 0.95  # mean mask IoU of the matched pairs
    match_iou: float = 0.5  # the least box IoU a match may have


INT8_BAR = AccuracyBar()


@dataclass(frozen=True, slots=True)
class Agreement:
    """How the int8 model's detections agree with the fp32 model's on the validation frames."""

    frames: int
    detections: int  # fp32 detections over all frames
    recall: float  # share of them matched
    box_iou: float  # mean over matched pairs (1.0 when there are none)
    mask_iou: float

    def meets(self, bar: AccuracyBar = INT8_BAR) -> bool:
        return self.detections > 0 and self.recall >= bar.recall and self.box_iou >= bar.box_iou \
            and self.mask_iou >= bar.mask_iou

    def describe(self) -> str:
        return (f"recall {self.recall:.3f}, box IoU {self.box_iou:.3f}, mask IoU {self.mask_iou:.3f} "
                f"over {self.detections} fp32 detections in {self.frames} frames")


def agreement(reference: Sequence[Detections], candidate: Sequence[Detections], *,
              match_iou: float = INT8_BAR.match_iou) -> Agreement:
    """Match each frame's ``candidate`` detections to the ``reference`` ones one to one (Hungarian on box
    IoU among same-class pairs, scipy's ``linear_sum_assignment``) and score the agreement."""
    import torchvision
    from scipy.optimize import linear_sum_assignment

    total, matched, box_ious, mask_ious = 0, 0, [], []
    for ref, cand in zip(reference, candidate, strict=True):
        total += len(ref)
        if len(ref) == 0 or len(cand) == 0:
            continue
        iou = torchvision.ops.box_iou(ref.boxes.float().cpu(), cand.boxes.float().cpu())
        iou = iou * (ref.class_ids.cpu()[:, None] == cand.class_ids.cpu()[None, :])
        rows, cols = linear_sum_assignment(-iou.numpy())
        keep = iou[rows, cols].numpy() >= match_iou
        rows, cols = rows[keep], cols[keep]
        matched += len(rows)
        box_ious += iou[rows, cols].tolist()
        a, b = ref.masks[torch.as_tensor(rows)].cpu(), cand.masks[torch.as_tensor(cols)].cpu()
        inter = (a & b).flatten(1).sum(1).float()
        union = (a | b).flatten(1).sum(1).float()
        mask_ious += torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).tolist()
    return Agreement(frames=len(reference), detections=total, recall=matched / total if total else 0.0,
                     box_iou=float(np.mean(box_ious)) if box_ious else 1.0,
                     mask_iou=float(np.mean(mask_ious)) if mask_ious else 1.0)


def default_calibration_clip() -> Path:
    """The clip bundled for the demo (found by path: the detector stage does not import engine.data)."""
    return Path(__file__).resolve().parents[2] / "data" / "bedroom_demo.mp4"


def calibration_frames(clip: str | Path | None = None, *, validation: bool = False,
                       limit: int | None = None) -> list[torch.Tensor]:
    """The calibration (or, with ``validation``, the validation) frames of ``clip`` (default: the demo
    clip), [H, W, 3] uint8 RGB each; ConfigError naming a clip that cannot be read or is too short."""
    import av

    path = Path(clip) if clip is not None else default_calibration_clip()
    start = _VALIDATION_OFFSET if validation else 0
    frames: list[torch.Tensor] = []
    try:
        with av.open(str(path)) as container:
            for index, picture in enumerate(container.decode(video=0)):
                if index >= start and (index - start) % _CALIBRATION_STEP == 0:
                    frames.append(torch.from_numpy(picture.to_ndarray(format="rgb24")))
                    if limit is not None and len(frames) >= limit:
                        break
    except (av.error.FFmpegError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read calibration frames ({exc}); pass a readable video") from None
    if len(frames) < 4:
        raise ConfigError(f"{path}: {len(frames)} calibration frames (every {_CALIBRATION_STEP}th); pass a "
                          f"clip of at least {4 * _CALIBRATION_STEP} frames")
    return frames


def quantized_model(fp32_onnx: str | Path, *, imgsz: int, stride: int = 32, calibration: str | Path | None = None,
                    cache_dir: str | Path | None = None) -> Path:
    """The int8 model of ``fp32_onnx`` (a YOLOv8-seg export), made once and cached; returns its path."""
    folder = _cache_folder(fp32_onnx, imgsz=imgsz, calibration=calibration, cache_dir=cache_dir)
    target = folder / "model.onnx"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    frames = calibration_frames(calibration)
    log.warning("quantising the detector to int8 on %d calibration frames (once for these weights; cached "
                "in %s)", len(frames), folder)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        part = Path(tmp) / "model.onnx"
        quantize(Path(fp32_onnx), part, frames, imgsz=imgsz, stride=stride)
        os.replace(part, target)
    return target


def quantize(fp32_onnx: Path, out: Path, frames: Sequence[torch.Tensor], *, imgsz: int, stride: int = 32) -> Path:
    """Write the int8 QDQ model of ``fp32_onnx`` to ``out``, calibrated on ``frames`` letterboxed as the
    detector letterboxes them (see the module docstring for what is quantised)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name("prepared.onnx")
    # constant folding and shape inference first, as ONNX Runtime's quantisation guide asks; the symbolic
    # pass cannot follow the head's dynamic anchor shapes, and the ONNX one is enough for Conv graphs
    quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared))
    head = _head_prefix(model)
    decoding = [n.name for n in model.graph.node if n.name.startswith(head)
                and not any(branch in n.name for branch in ("/cv2.", "/cv3.", "/cv4.", "/proto/"))]
    input_name = model.graph.input[0].name
    reader = _FrameReader(frames, input_name, imgsz=imgsz, stride=stride)
    quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    reduce_range=_reduce_range(), nodes_to_exclude=decoding,
                    calibrate_method=CalibrationMethod.MinMax)
    quantized = onnx.load(str(out))
    del quantized.metadata_props[:]  # the fp32 export's metadata (names, stride, random_weights) carries over
    for prop in onnx.load(str(fp32_onnx), load_external_data=False).metadata_props:
        quantized.metadata_props.add(key=prop.key, value=prop.value)
    quantized.metadata_props.add(key="quantization", value=_scheme())
    onnx.save(quantized, str(out))
    prepared.unlink(missing_ok=True)
    return out


def _head_prefix(model) -> str:
    """The node-name prefix of the Segment head: the last numbered module (``/model.22/`` for v8)."""
    numbers = [int(n.name.split("/")[1].split(".")[1]) for n in model.graph.node
               if n.name.startswith("/model.") and n.name.split("/")[1].split(".")[1].isdigit()]
    if not numbers:
        raise BackendError("the ONNX model's nodes are not named as Ultralytics' export names them "
                           "(/model.N/...); re-export it with `streamseg export detector`")
    return f"/model.{max(numbers)}/"


class _FrameReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over letterboxed frames, one batch of 1 each."""

    def __init__(self, frames: Sequence[torch.Tensor], input_name: str, *, imgsz: int, stride: int) -> None:
        self._frames, self._input, self._imgsz, self._stride = list(frames), input_name, imgsz, stride
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        from engine.detect.yolo.letterbox import batch_geometry, letterbox_batch

        if self._next >= len(self._frames):
            return None
        frame = self._frames[self._next]
        self._next += 1
        geometry = batch_geometry([(int(frame.shape[0]), int(frame.shape[1]))], imgsz=self._imgsz,
                                  stride=self._stride, dynamic_hw=True)
        batch = letterbox_batch([frame], geometry, device=torch.device("cpu"), dtype=torch.float32)
        return {self._input: batch.numpy()}

    def rewind(self) -> None:
        self._next = 0


def read_agreement(folder: Path, key: str) -> Agreement | None:
    try:
        return Agreement(**json.loads((folder / f"accuracy-{key}.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None  # none yet, or unreadable: measured again


def write_agreement(folder: Path, key: str, result: Agreement) -> None:
    target = folder / f"accuracy-{key}.json"
    part = target.with_suffix(".part")
    try:
        part.write_text(json.dumps(asdict(result)))
        os.replace(part, target)
    except OSError as exc:  # a derived record: measured again next time
        log.warning("cannot cache the int8 accuracy record in %s (%s)", folder, exc.strerror)


def _cache_folder(fp32_onnx: str | Path, *, imgsz: int, calibration: str | Path | None,
                  cache_dir: str | Path | None) -> Path:
    from importlib.metadata import version

    from engine.weights import cache_dir as weights_cache, sha256_of

    clip = Path(calibration) if calibration is not None else default_calibration_clip()
    if not clip.is_file():
        raise ConfigError(f"{clip}: no such calibration clip; pass a video file")
    key = f"{sha256_of(Path(fp32_onnx))}|{sha256_of(clip)}|{imgsz}|{_scheme()}|ort {version('onnxruntime')}"
    base = Path(cache_dir) if cache_dir is not None else weights_cache() / "detector-int8"
    return base / hashlib.sha256(key.encode()).hexdigest()[:24]


__all__ = ["INT8_BAR", "AccuracyBar", "Agreement", "agreement", "calibration_frames", "default_calibration_clip",
           "quantize", "quantized_model", "read_agreement", "write_agreement"]
