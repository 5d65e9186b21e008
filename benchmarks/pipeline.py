"""The whole engine end to end, against Ultralytics ``track`` on the same frames and detector weights,
in one run; the pipeline's own overhead; and the fusion stage's cost against the number of objects.

    python -m benchmarks.pipeline [--clips tests/media/*.mp4] [--synthetic] [--frames 60]
                                  [--objects 10] [--tracker-size 256] [--skip-fusion]
                                  [--hd | --hd-only] [--hd-frames 300] [--hd-objects 10] [--hd-size 1920x1080]

1. overhead: the pipeline with no networks against iterating its source alone: what the streaming
   machinery (threads, hand-off, timing, results) costs per frame.
2. end to end: streamseg (YOLOv8n-seg + SAM 2.1 hiera-t + fusion), streamseg with ``--tracker none``,
   and Ultralytics ``YOLO.track`` (ByteTrack, retina masks) on the same decoded frames, the detector's
   random weights spread the same way, both capped at ``--objects`` detections. Per-stage p50/p95/p99
   from FrameResult.times (DESIGN.md decision 9), frames per second.
   Not equal work: Ultralytics' masks come from the detector alone; streamseg's come from SAM 2, which
   costs more and follows objects between detections.
3. fusion: one frame's association, overlap resolution and final masks for 1..100 objects at 1080p,
   the kernels against the references where a GPU is present, the references alone elsewhere.
4. 1080p30 (``--hd``, or ``--hd-only`` for it alone): the whole engine on a clip scaled to 1920x1080
   with ``--hd-objects`` (10) tracked objects, frames already decoded in memory (offline: as fast as it
   goes). ``prompted``: YOLOv8n-seg (capped at 10 detections) + SAM 2 with 10 objects prompted on frame 0
   (exactly 10 tracked on every frame) + their instances; ``fused``: the same networks with the fusion
   stage spawning up to 10 tracks from detections (random weights make it churn; mean tracks reported).
   Per-stage p50/p95/p99, throughput, peak GPU memory (peak RSS on a CPU), the memory in use after
   every frame (flat, or how fast it grows), and the number of 1080p30 streams the throughput would
   carry (throughput / 30, an upper bound: several streams share the GPU less well than one).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment, percentiles, write_json
from engine.types import TIMING_KEYS

ROOT = Path(__file__).resolve().parents[1]


def read_frames(clip: Path, count: int) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(clip)) as container:
        for picture in container.decode(video=0):
            frames.append(picture.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def synthetic_frames(count: int, *, width: int = 1280, height: int = 720) -> list[np.ndarray]:
    from engine.sources.synthetic import SyntheticScene

    scene = SyntheticScene(seed=3, frames=count, width=width, height=height, objects=10)
    return [scene.render(i) for i in range(count)]


def overhead(frames: list[np.ndarray], *, repeats: int = 3) -> dict:
    """ms per frame: the source alone, and the pipeline with no networks over the same source."""
    from engine.pipeline import Pipeline
    from engine.sources import ArraySource

    def source_alone() -> float:
        start = time.perf_counter()
        with ArraySource(frames) as source:
            for _ in source:
                pass
        return (time.perf_counter() - start) * 1000 / len(frames)

    def pipeline() -> float:
        start = time.perf_counter()
        Pipeline(ArraySource(frames)).run()
        return (time.perf_counter() - start) * 1000 / len(frames)

    alone, piped = [], []
    for _ in range(repeats):  # interleaved, so machine load falls on both alike
        alone.append(source_alone())
        piped.append(pipeline())
    return {"source_ms": float(np.median(alone)), "pipeline_ms": float(np.median(piped)),
            "overhead_ms": float(np.median(piped) - np.median(alone))}


def engine_run(frames: list[np.ndarray], *, tracker: bool, objects: int, tracker_size: int,
               device: str) -> dict:
    """Per-stage percentiles and frames/s of streamseg on ``frames``."""
    from engine.detect import DetectorConfig, load_detector
    from engine.fuse import Fuser, FuserConfig
    from engine.pipeline import Pipeline
    from engine.sources import ArraySource
    from engine.track import load_tracker

    detector = load_detector(DetectorConfig(weights="random", conf=0.25, max_det=objects, device=device))
    trk = fuser = None
    if tracker:
        trk = load_tracker("sam2.1_hiera_t", weights="random", image_size=tracker_size, device=device)
        # random weights score near the threshold: any kept detection may start a track
        fuser = Fuser(FuserConfig(spawn_conf=0.25, max_tracks=objects), names=detector.names)
    pipeline = Pipeline(ArraySource(frames), detector=detector, tracker=trk, fuser=fuser, device=device)
    times = {stage: [] for stage in TIMING_KEYS}
    counts = []
    start = time.perf_counter()
    for result in pipeline:
        for stage, value in result.times.as_dict().items():
            times[stage].append(value)
        counts.append(len(result.instances))
    wall = time.perf_counter() - start
    warm = slice(3, None)  # the first frames load kernels and caches
    return {"fps": len(frames) / wall, "instances_mean": float(np.mean(counts)),
            "stages": {stage: percentiles(values[warm]) for stage, values in times.items()}}


def ultralytics_track(frames: list[np.ndarray], *, objects: int, device: str) -> dict:
    """Per-frame percentiles and frames/s of Ultralytics YOLO.track on the same frames and weights."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    from engine.detect.yolo.loading import build_from_yaml

    model = YOLO("yolov8n-seg.yaml")
    model.model.load_state_dict(build_from_yaml("yolov8n-seg.yaml", seed=0, spread=True).state_dict())
    threads = torch.get_num_threads()
    times, counts = [], []
    start = time.perf_counter()
    for frame in frames:
        t0 = time.perf_counter()
        result = model.track(frame[:, :, ::-1], persist=True, conf=0.25, iou=0.7, imgsz=640, max_det=objects,
                             retina_masks=True, verbose=False, device=device, tracker="bytetrack.yaml")[0]
        times.append((time.perf_counter() - t0) * 1000)
        counts.append(0 if result.boxes is None else len(result.boxes))
        torch.set_num_threads(threads)  # Ultralytics lowers it on its first call; keep both sides equal
    wall = time.perf_counter() - start
    return {"fps": len(frames) / wall, "instances_mean": float(np.mean(counts)),
            "stages": {"total": percentiles(times[3:])}}


def fusion_cost(objects: tuple[int, ...], *, device: str, size: tuple[int, int] = (1080, 1920),
                repeats: int = 10) -> list[dict]:
    """ms for one frame of fusion with ``n`` tracked objects all matched by detections."""
    from engine.fuse import Fuser, FuserConfig
    from engine.ops import mask_boxes
    from engine.types import Detections, Frame, Tracks

    rows = []
    height, width = size
    # On a GPU: the kernels against the torch references. On the CPU: the path the engine runs there
    # (the references, and the packed popcount for mask IoU).
    paths = ["kernels", "reference"] if torch.device(device).type == "cuda" else ["cpu"]
    for n in objects:
        g = torch.Generator().manual_seed(n)
        # one compact positive blob per object on a negative background, like object logits
        yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
        centres = torch.rand((n, 2), generator=g) * 256
        radius = 6 + torch.rand((n, 1, 1), generator=g) * 20
        low = 4 * (1 - ((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2).sqrt() / radius)
        low, frame_image = low.to(device), torch.zeros((height, width, 3), dtype=torch.uint8, device=device)
        masks = torch.nn.functional.interpolate(low[:, None], size=size, mode="bilinear")[:, 0] > 0
        tracks = Tracks(obj_ids=list(range(1, n + 1)), masks=masks, logits=low, scores=torch.ones(n, device=device))
        dets = Detections(boxes=mask_boxes(masks), scores=torch.full((n,), 0.9, device=device),
                          class_ids=torch.zeros(n, dtype=torch.int64, device=device), masks=masks)
        for path in paths:
            os.environ["STREAMSEG_OPS"] = "reference" if path == "reference" else "auto"
            fuser = Fuser(FuserConfig(max_tracks=n + 1), names=("object",))
            for obj_id in tracks.obj_ids:  # adopt the objects as matched tracks
                fuser.tracks[obj_id] = _state(obj_id)
            frame = Frame(image=frame_image, index=0, pts=None, capture_time=0.0)
            samples = []
            for _ in range(repeats):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                _fuse_one_frame(fuser, frame, dets, tracks)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                samples.append((time.perf_counter() - t0) * 1000)
            rows.append({"objects": n, "path": path, **percentiles(samples)})
    os.environ.pop("STREAMSEG_OPS", None)
    return rows


def _fuse_one_frame(fuser, frame, dets, tracks) -> None:
    """The fuse stage of one frame: every track matches its detection exactly, so nothing is decided
    and nothing reaches a tracker."""
    decided = fuser.associate(frame, dets, tracks) + fuser.retire(frame, tracks)
    if decided:
        raise AssertionError(f"fusion benchmark: unexpected decisions {decided[:3]}")
    fuser.resolve(frame, dets, tracks)


def _state(obj_id: int):
    from engine.fuse import TrackState

    return TrackState(id=obj_id, born=0, class_scores=np.array([1.0]), score=0.9, matches=5)


def hd_frames(clip: Path, count: int, *, width: int = 1920, height: int = 1080) -> list[np.ndarray]:
    """``count`` frames of ``clip`` scaled to ``width`` x ``height`` by the decoder (played back and forth
    when the clip is shorter)."""
    import av

    frames = []
    with av.open(str(clip)) as container:
        for picture in container.decode(video=0):
            frames.append(picture.to_ndarray(format="rgb24", width=width, height=height))
            if len(frames) == count:
                break
    loop = frames + frames[-2:0:-1]
    return [loop[i % len(loop)] for i in range(count)]


def hd_boxes(objects: int, width: int, height: int) -> dict[int, list[float]]:
    """``objects`` boxes on a grid over the frame, each a quarter of the frame's side, ids from 1."""
    side = max(1, int(np.ceil(np.sqrt(objects))))
    cell_w, cell_h = width / side, height / side
    return {i + 1: [(i % side) * cell_w + cell_w * 0.1, (i // side) * cell_h + cell_h * 0.1,
                    (i % side) * cell_w + cell_w * 0.9, (i // side) * cell_h + cell_h * 0.9]
            for i in range(objects)}


# The CPU paths ``--hd-paths`` compares: (tracker precision, tracker image encoder, detector backend,
# overlapped stages).
CPU_PATHS = {
    "exact": ("exact", "onnxruntime", "onnxruntime", False),  # fp32 everywhere: the CPU default before bf16
    "auto": ("auto", "auto", "auto", False),  # today's CPU default (random weights: fp32 detector)
    "auto-int8": ("auto", "auto", "onnxruntime-int8", False),  # and the int8 detector
    # the detector one frame ahead on its own thread (engine.overlap, the cores split by ThreadSplit.of)
    "auto-overlap": ("auto", "auto", "auto", True),
    "auto-int8-overlap": ("auto", "auto", "onnxruntime-int8", True),
}


def hd_stream(frames: list[np.ndarray], *, mode: str, objects: int, tracker_size: int, device: str,
              warm: int = 5, path: str = "auto", split: tuple[int, int] | None = None) -> dict:
    """The whole engine over ``frames`` (see 4. in the module docstring) on one of ``CPU_PATHS``;
    ``warm`` first frames are left out of the percentiles (graph captures, lazy initialisation)."""
    from engine.detect import DetectorConfig, load_detector
    from engine.fuse import Fuser, FuserConfig, TracksOnly
    from engine.overlap import ThreadSplit, torch_threads
    from engine.pipeline import Pipeline
    from engine.prompts import PromptQueue
    from engine.runtime.precision import PrecisionPolicy
    from engine.sources import ArraySource
    from engine.track import TrackerConfig, load_tracker

    cuda = device.startswith("cuda")
    precision, encoder, backend, overlap = CPU_PATHS[path]
    split = (ThreadSplit(*split) if split else ThreadSplit.of()) if overlap else None
    if encoder == "auto":  # as engine.app chooses
        bf16 = PrecisionPolicy.for_device(device, precision).image_encoder == torch.bfloat16
        encoder = "torch" if cuda or bf16 else "onnxruntime"
    detector = load_detector(DetectorConfig(weights="random", conf=0.25, max_det=objects, device=device,
                                            backend=backend, threads=split.detector if split else None))
    with torch_threads(split.tracker if split else torch.get_num_threads()):  # as engine.app builds it
        trk = load_tracker("sam2.1_hiera_t", weights="random", image_size=tracker_size, device=device,
                           options=TrackerConfig(precision=precision, encoder_backend=encoder))
    height, width = frames[0].shape[:2]
    prompts = PromptQueue()
    if mode == "prompted":  # the user's boxes on frame 0; the detector still runs on every frame
        fuser = TracksOnly()
        for obj_id, box in hd_boxes(objects, width, height).items():
            prompts.track(box=box, obj_id=obj_id)
    else:
        fuser = Fuser(FuserConfig(spawn_conf=0.25, max_tracks=objects), names=detector.names)
    pipeline = Pipeline(ArraySource(frames, fps=30.0), detector=detector, tracker=trk, fuser=fuser,
                        prompts=prompts, device=device, overlap=split)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times: dict[str, list[float]] = {}
    counts, in_use = [], []
    start = time.perf_counter()
    for result in pipeline:
        for stage, value in result.times.as_dict().items():
            times.setdefault(stage, []).append(value)
        counts.append(len(trk.object_ids))
        in_use.append(torch.cuda.memory_allocated() if cuda else _rss_bytes())
    wall = time.perf_counter() - start
    fps = len(frames) / wall
    report = {"mode": mode, "path": path, "threads": split.describe() if split else torch.get_num_threads(),
              "precision": trk.precision.reason, "encoder": encoder,
              "detector_backend": detector.backend.name, "frames": len(frames), "size": [width, height], "fps": fps,
              "tracked_mean": float(np.mean(counts[warm:] or counts)),
              "stages": {stage: percentiles(values[warm:]) for stage, values in times.items()},
              "memory": _memory_trend(in_use[warm:] or in_use),
              "streams_1080p30_estimate": int(fps // 30)}
    if cuda:
        report["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource

        report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return report


def _rss_bytes() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _memory_trend(samples: list[int]) -> dict[str, float]:
    """First, last and largest sample (MiB) and the least-squares growth in MiB per 1,000 frames."""
    a = np.asarray(samples, dtype=float) / 2**20
    slope = float(np.polyfit(np.arange(a.size), a, 1)[0]) if a.size > 1 else 0.0
    return {"first_mib": float(a[0]), "last_mib": float(a[-1]), "max_mib": float(a.max()),
            "growth_mib_per_1000_frames": slope * 1000.0}


def _print_hd(entry: dict) -> None:
    mem = entry["memory"]
    peak = entry.get("peak_gpu_mib", entry.get("peak_rss_mib"))
    print(f"\n{entry['size'][0]}x{entry['size'][1]} {entry['mode']}, path {entry.get('path', 'auto')} "
          f"(detector {entry.get('detector_backend')}, tracker encoder {entry.get('encoder')}), {entry['frames']} frames, "
          f"{entry['tracked_mean']:.1f} tracked: {entry['fps']:.1f} frames/s "
          f"(~{entry['streams_1080p30_estimate']} streams at 30 fps), peak {peak:.0f} MiB, in use "
          f"{mem['first_mib']:.0f} -> {mem['last_mib']:.0f} MiB ({mem['growth_mib_per_1000_frames']:+.1f} "
          "MiB per 1,000 frames)")
    for stage, s in entry["stages"].items():
        if s.get("n"):
            print(f"  {stage:<10} p50 {s['p50']:8.2f}  p95 {s['p95']:8.2f}  p99 {s['p99']:8.2f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=Path, nargs="+",
                   default=[ROOT / "tests" / "media" / "bedroom.mp4", ROOT / "tests" / "media" / "02_cups.mp4"])
    p.add_argument("--synthetic", action="store_true", help="also a synthetic 1280x720 scene")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--objects", type=int, default=10, help="detections per frame and tracks, at most")
    p.add_argument("--tracker-size", type=int, default=None, help="default 1024 on a GPU, 256 on a CPU")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--fusion-objects", type=int, nargs="+", default=[1, 10, 30, 100])
    p.add_argument("--skip-fusion", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--hd", action="store_true", help="also the 1080p30 case (4. above)")
    p.add_argument("--hd-only", action="store_true", help="only the 1080p30 case")
    p.add_argument("--hd-frames", type=int, default=300)
    p.add_argument("--hd-objects", type=int, default=10)
    p.add_argument("--hd-size", default="1920x1080", help="WIDTHxHEIGHT of the 1080p30 case's frames")
    p.add_argument("--hd-modes", nargs="+", choices=("prompted", "fused"), default=["prompted", "fused"])
    p.add_argument("--hd-warm", type=int, default=5, help="first frames left out of the 1080p30 percentiles")
    p.add_argument("--hd-paths", nargs="+", choices=tuple(CPU_PATHS), default=["auto"],
                   help="precision paths to compare in the 1080p30 case (exact: fp32 everywhere, the CPU "
                        "default before bf16; auto: today's default; auto-int8: and the int8 detector; "
                        "-overlap: the detector one frame ahead on its own threads)")
    p.add_argument("--hd-rounds", type=int, default=1, help="times each path runs, alternating")
    p.add_argument("--overlap-split", default=None, metavar="D,T",
                   help="threads of the detector and of the tracker on the -overlap paths (default: "
                        "engine.overlap.ThreadSplit.of(), what --overlap uses)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tracker_size = args.tracker_size or (1024 if args.device.startswith("cuda") else 256)
    if args.hd or args.hd_only:
        hd_report = _run_hd(args, tracker_size)
        if args.hd_only:
            return 0
        print(f"(1080p30 case written to {hd_report})")
    inputs = {clip.name: read_frames(clip, args.frames) for clip in args.clips}
    if args.synthetic:
        inputs["synthetic-1280x720"] = synthetic_frames(args.frames)
    report = {"environment": environment(), "args": {k: str(v) for k, v in vars(args).items()},
              "tracker_size": tracker_size, "inputs": {}}
    for name, frames in inputs.items():
        entry = {"frames": len(frames), "size": list(frames[0].shape[1::-1]), "overhead": overhead(frames)}
        entry["streamseg"] = engine_run(frames, tracker=True, objects=args.objects, tracker_size=tracker_size,
                                        device=args.device)
        entry["streamseg_no_tracker"] = engine_run(frames, tracker=False, objects=args.objects,
                                                   tracker_size=tracker_size, device=args.device)
        entry["ultralytics_track"] = ultralytics_track(frames, objects=args.objects, device=args.device)
        report["inputs"][name] = entry
        _print_input(name, entry)
    if not args.skip_fusion:
        report["fusion"] = fusion_cost(tuple(args.fusion_objects), device=args.device)
        print(f"\nfusion, 1080p, ms per frame\n{'objects':>8}{'path':>11}{'p50':>9}{'p95':>9}")
        for row in report["fusion"]:
            print(f"{row['objects']:>8}{row['path']:>11}{row['p50']:>9.2f}{row['p95']:>9.2f}")
    print(f"\n{report['environment']['device']}; wrote {write_json('pipeline', report, out=args.out)}")
    return 0


def _run_hd(args, tracker_size: int) -> Path:
    """The 1080p30 case; its JSON is rewritten after each mode, so a run cut short keeps what it measured."""
    width, height = (int(v) for v in args.hd_size.lower().split("x"))
    frames = hd_frames(args.clips[0], args.hd_frames, width=width, height=height)
    report = {"environment": environment(), "args": {k: str(v) for k, v in vars(args).items()},
              "tracker_size": tracker_size, "clip": str(args.clips[0]), "hd": []}
    out = args.out or write_json("pipeline-hd", report)
    for _ in range(args.hd_rounds):  # paths alternate, so that machine load falls on each alike
        for mode in args.hd_modes:
            for path in args.hd_paths:
                split = tuple(int(v) for v in args.overlap_split.split(",")) if args.overlap_split else None
                report["hd"].append(hd_stream(frames, mode=mode, objects=args.hd_objects, tracker_size=tracker_size,
                                              device=args.device, warm=args.hd_warm, path=path, split=split))
                write_json("pipeline-hd", report, out=out)
                _print_hd(report["hd"][-1])
    print(f"\n{report['environment']['device']}; wrote {out}")
    return out


def _print_input(name: str, entry: dict) -> None:
    o = entry["overhead"]
    print(f"\n{name} ({entry['size'][0]}x{entry['size'][1]}, {entry['frames']} frames): pipeline overhead "
          f"{o['overhead_ms']:.2f} ms/frame (source alone {o['source_ms']:.2f}, pipeline {o['pipeline_ms']:.2f})")
    print(f"{'':<22}{'fps':>7}{'inst':>6}" + "".join(f"{s + ' p50/p95/p99':>24}" for s in ("detect", "track", "fuse", "total")))
    for key in ("streamseg", "streamseg_no_tracker", "ultralytics_track"):
        r = entry[key]
        cells = []
        for stage in ("detect", "track", "fuse", "total"):
            s = r["stages"].get(stage)
            cells.append(f"{s['p50']:>8.1f}{s['p95']:>8.1f}{s['p99']:>8.1f}" if s else f"{'-':>24}")
        print(f"{key:<22}{r['fps']:>7.2f}{r['instances_mean']:>6.1f}" + "".join(cells))


if __name__ == "__main__":
    raise SystemExit(main())
