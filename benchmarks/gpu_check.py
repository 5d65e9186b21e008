"""The Python half of benchmarks/gpu_check.sh: what travels to the GPU machine, what comes back, and the
summary of one check.

    python -m benchmarks.gpu_check carry [--carry .whl]        # does the call fit? prints the run call
    python -m benchmarks.gpu_check env --out ENV.json          # GPU, driver, CUDA, torch, tool versions
    python -m benchmarks.gpu_check report --scratch DIR --out OUT [--final]
    python -m benchmarks.gpu_check verify --out OUT [--dry-run]

Only the standard library at import (``env`` imports torch when it runs): ``report`` runs after every
step of the check and must stay instant.

The limits are the device tool's (/work/.library/device/README.md of the workplace that lends the
machine): a call carries at most 64 MiB (tracked files, untracked files git does not ignore, and the
``carry`` paths), and at most 8 files come back from $OUT, 16 MiB each, 64 MiB together, named in
letters, digits, '.', '_' and '-', no more than two folders down.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

MIB = 2 ** 20
CARRY_LIMIT = 64 * MIB
RETURN_FILES, RETURN_FILE_LIMIT, RETURN_TOTAL = 8, 16 * MIB, 64 * MIB
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
# What the GPU image lacks and the check needs, as wheel distribution names (shared/tools/gpu-wheels.sh).
NEEDED_WHEELS = ("av", "ultralytics", "ultralytics_thop", "sam2", "pycocotools", "hydra_core", "omegaconf",
                 "iopath", "antlr4_python3_runtime")
# The files a check leaves in $OUT (gpu_check.sh writes them; ``verify`` holds it to this list).
OUTPUTS = ("summary.json", "setup.log", "tests.log", "sanitizer.log", "bench.log", "benchmarks.json")
BENCHMARKS = ("kernels", "tracker", "pipeline", "detector", "tracker-vos")
COMMAND = "bash benchmarks/gpu_check.sh"


# ----------------------------------------------------------------------------------------------- carry
def travelling_files(root: Path) -> list[tuple[str, int]]:
    """(path, bytes) of what a device call sends from ``root``: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], check=True, capture_output=True).stdout
    out = []
    for name in filter(None, listed.decode().split("\0")):
        path = root / name
        if path.is_file() and not path.is_symlink():
            out.append((name, path.stat().st_size))
    return out


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def wheel_problems(folder: Path) -> list[str]:
    """What is wrong with a wheel folder for the GPU image: missing packages, two versions of one."""
    if not folder.is_dir():
        return [f"{folder.name}/ is missing: run `bash ../shared/tools/gpu-wheels.sh` in the repository root"]
    names: dict[str, list[str]] = {}
    for wheel in folder.glob("*.whl"):
        names.setdefault(wheel.name.split("-")[0].lower(), []).append(wheel.name)
    problems = [f"no wheel for {n}" for n in NEEDED_WHEELS if n not in names]
    problems += [f"two versions of {n} ({', '.join(sorted(w))}): pip stops the whole install"
                 for n, w in names.items() if len(w) > 1]
    return problems


def carry_report(root: Path, carry: Sequence[str], limit: int = CARRY_LIMIT) -> tuple[bool, str]:
    """Whether the call fits, and the report that says so, with the ``run`` call to make."""
    files = travelling_files(root)
    tree = sum(size for _, size in files)
    carried = {c: folder_bytes(root / c) if (root / c).exists() else 0 for c in carry}
    total = tree + sum(carried.values())
    lines = [f"what travels from {root}:",
             f"  working tree (tracked + untracked, not ignored): {tree / MIB:7.2f} MiB, {len(files)} files"]
    lines += [f"  carry {name + '/':<10} {size / MIB:7.2f} MiB" for name, size in carried.items()]
    verdict = "fits" if total <= limit else "DOES NOT FIT"
    lines.append(f"  total {total / MIB:.2f} MiB of {limit / MIB:.0f} MiB ({verdict}; "
                 f"{(limit - total) / MIB:+.2f} MiB to spare)")
    lines.append("  largest: " + ", ".join(f"{n} {s / MIB:.1f} MiB"
                                           for n, s in sorted(files, key=lambda f: -f[1])[:3]))
    problems = [p for c in carry if c.strip("/") == ".whl" for p in wheel_problems(root / c)]
    lines += [f"  problem: {p}" for p in problems]
    carry_list = ", ".join(f'"{c}"' for c in carry)
    lines += ["the call to make (one call, up to 9 minutes of the script plus the start):",
              f'  run(command="{COMMAND}", carry=[{carry_list}], timeout_s=600)',
              "then, on the machine while it is still warm (30 s), for what the first did not finish, e.g.:",
              (f'  run(command="{COMMAND} --steps wheels,env,tracker-vos --budget 180", carry=[{carry_list}], '
               "timeout_s=220)")]
    return total <= limit and not problems, "\n".join(lines)


# ------------------------------------------------------------------------------------------------- env
def environment_record() -> dict:
    """GPU, driver, CUDA, torch and tool versions (imports torch; no engine import)."""
    import platform
    from importlib import metadata

    import torch

    env: dict = {"python": platform.python_version(), "torch": torch.__version__,
                 "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, compute_capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                   multiprocessors=props.multi_processor_count)
    smi = _first_line(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if smi:
        env["nvidia_smi"] = smi
        env["driver"] = smi.split(",")[1].strip() if smi.count(",") >= 2 else None
    nvcc = _first_line(["nvcc", "--version"], containing="release")
    env["nvcc"] = nvcc.split("release", 1)[1].strip() if nvcc else None
    env["compute_sanitizer"] = _first_line(["compute-sanitizer", "--version"], containing="Version")
    for dist in ("torchvision", "numpy", "av", "ultralytics", "sam2", "onnxruntime", "triton"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = None
    return env


def _first_line(command: list[str], *, containing: str = "") -> str | None:
    """The first line of ``command``'s output that holds ``containing``; None if it cannot run."""
    try:
        out = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return next((line.strip() for line in out if containing in line), None)


# ---------------------------------------------------------------------------------------------- report
def read_steps(scratch: Path) -> list[dict]:
    """The steps gpu_check.sh recorded, in order: name, status, rc, seconds, limit, log, note."""
    path = scratch / "steps.tsv"
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            name, status, rc, seconds, limit, log, note = (line.split("\t") + [""] * 7)[:7]
            rows.append({"name": name, "status": status, "rc": int(rc) if rc.lstrip("-").isdigit() else None,
                         "seconds": int(seconds or 0), "limit": int(limit or 0), "log": log, "note": note})
    return rows


def junit_counts(path: Path) -> dict:
    """Passed/failed/skipped counts and the failures' names and first lines from a pytest JUnit file."""
    if not path.exists():
        return {}
    counts = {"passed": 0, "failed": 0, "skipped": 0, "failures": [], "skip_reasons": {}}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"error": f"unreadable JUnit XML: {exc}"}
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            counts["failed"] += 1
            message = (bad.get("message") or "").splitlines()
            counts["failures"].append(f"{name}: {message[0][:160] if message else ''}")
        elif skipped is not None:
            counts["skipped"] += 1
            reason = (skipped.get("message") or "").strip()[:120]
            counts["skip_reasons"][reason] = counts["skip_reasons"].get(reason, 0) + 1
        else:
            counts["passed"] += 1
    return counts


def sanitizer_summary(log: Path) -> dict[str, str]:
    """Per tool, compute-sanitizer's ERROR SUMMARY and the tests it watched ("0 errors; 12 passed"): no
    error over tests that all skipped (no kernel library) proves nothing, so the counts go with it."""
    if not log.exists():
        return {}
    verdicts: dict[str, str] = {}
    tests: dict[str, str] = {}
    tool = None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("=== "):
            tool = line.split()[1]
        if tool is None:
            continue
        match = re.search(r"ERROR SUMMARY: (\d+) error", line)
        if match:
            verdicts[tool] = f"{match.group(1)} errors"
        if "compute-sanitizer not installed" in line:
            verdicts[tool] = "not run: compute-sanitizer not installed"
        counts = re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", line)
        if counts and re.search(r" in [\d.]+s", line):
            tests[tool] = ", ".join(f"{n} {what}" for n, what in counts)
    return {tool: f"{verdict}; tests: {tests.get(tool, 'no pytest summary')}" for tool, verdict in verdicts.items()}


def merged_benchmarks(scratch: Path) -> dict:
    out = {}
    for name in BENCHMARKS:
        path = scratch / f"{name}.json"
        if path.exists():
            try:
                out[name] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                out[name] = {"error": f"unreadable: {exc}"}
    return out


def key_numbers(bench: dict) -> list[str]:
    """One line per headline number (ratios against baselines measured in the same run)."""
    lines = []
    kernels = bench.get("kernels", {}).get("timings", [])
    by_key = {(t["op"], t["masks"], t["path"]): t for t in kernels}
    for op in dict.fromkeys(t["op"] for t in kernels):
        cells = []
        for (o, masks, path), t in by_key.items():
            if o == op and path == "kernel" and (op, masks, "reference") in by_key:
                ref = by_key[(op, masks, "reference")]
                ratio = ref["p50_ms"] / t["p50_ms"]
                cells.append(f"{masks}: {t['p50_ms']:.3f}/{ref['p50_ms']:.3f} ({ratio:.0f}x)")
            elif o == op and path == "reference" and (op, masks, "kernel") not in by_key:
                cells.append(f"{masks}: ref {t['p50_ms']:.2f}")
        lines.append(f"kernel {op:<17} p50 ms kernel/ref  " + "  ".join(cells))
    for name in ("tracker", "tracker-vos"):
        result = bench.get(name, {})
        for r in result.get("speed", []):
            o, b = r["ours"], r["base"]
            lines.append(f"tracker vs {r['baseline']:<13} {r['objects']:>2} obj: ours p50 {o['p50']:.1f} p99 "
                         f"{o['p99']:.1f} ms ({o['fps']:.0f} fps) vs {b['p50']:.1f} ms: "
                         f"{r['speedup_p50']:.2f}x, IoU min {r['mask_iou_min']:.3f}")
        for base, reason in result.get("skipped", {}).items():
            lines.append(f"tracker vs {base}: not run ({reason[:90]})")
        for base, seconds in result.get("warmup_s", {}).items():
            if seconds:
                lines.append(f"tracker vs {base}: first run's prompts + warm-up {seconds:.0f} s")
    for entry in bench.get("pipeline", {}).get("hd", []):
        total = entry["stages"].get("total", {})
        peak = entry.get("peak_gpu_mib", entry.get("peak_rss_mib", 0.0))
        width, height = entry["size"]
        lines.append(f"engine {width}x{height} {entry['mode']:<8} {entry['tracked_mean']:.0f} tracked: "
                     f"{entry['fps']:.0f} fps, total p99 {total.get('p99', float('nan')):.1f} ms, peak "
                     f"{peak:.0f} MiB, {entry['memory']['growth_mib_per_1000_frames']:+.1f} MiB/1000 frames, "
                     f"~{entry['streams_1080p30_estimate']} streams")
    points = bench.get("detector", {}).get("points", [])
    if points:
        cells = [f"{p['max_det']}: {p['engine_p50_ms']:.1f}/{p['baselines']['ultralytics']['p50_ms']:.1f} "
                 f"({p['baselines']['ultralytics']['speedup_p50']:.1f}x)" for p in points
                 if "ultralytics" in p.get("baselines", {})]
        lines.append("detector vs ultralytics p50 ms  " + "  ".join(cells))
    return lines


def build_summary(scratch: Path, out: Path, *, dry_run: bool, budget: int | None) -> dict:
    steps = read_steps(scratch)
    env = json.loads((scratch / "env.json").read_text()) if (scratch / "env.json").exists() else {}
    bench = merged_benchmarks(scratch)
    _write_atomic(out / "benchmarks.json", bench)
    summary = {"dry_run": dry_run, "budget_s": budget, "environment": env, "steps": steps,
               "tests": junit_counts(scratch / "gpu-tests.xml"),
               "sanitizer": sanitizer_summary(out / "sanitizer.log"),
               "build": _build_facts(out / "setup.log"), "key_numbers": key_numbers(bench)}
    _write_atomic(out / "summary.json", summary)
    return summary


def _build_facts(setup_log: Path) -> dict:
    if not setup_log.exists():
        return {}
    text = setup_log.read_text(errors="replace")
    facts = {"gencode": sorted(set(re.findall(r"-gencode=arch=\w+,code=\w+", text)))}
    elf = re.findall(r"ELF file\s+\d+: (\S+)", text)
    ptx = re.findall(r"PTX file\s+\d+: (\S+)", text)
    if elf or ptx:
        facts.update(elf=elf, ptx=ptx)
    backend = re.findall(r"ops backend: (.*)", text)
    if backend:
        facts["ops_backend"] = backend[-1]
    return facts


def _write_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


def print_summary(summary: dict) -> None:
    env = summary["environment"]
    steps = summary["steps"]
    used = sum(s["seconds"] for s in steps)
    mode = ("DRY RUN on the CPU (tiny sizes; nothing here is a GPU measurement)" if summary["dry_run"]
            else "GPU")
    print(f"\n==== streamseg gpu_check: {mode}")
    print(f"{env.get('gpu', 'no GPU')} (cc {env.get('compute_capability', '-')}), "
          f"driver {env.get('driver')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), nvcc {env.get('nvcc')}, "
          f"python {env.get('python')}; steps took {used} s of a {summary['budget_s']} s budget")
    print(f"{'step':<12} {'status':<9} {'time':>6} {'limit':>6}  note")
    for s in steps:
        print(f"{s['name']:<12} {s['status']:<9} {s['seconds']:>5}s {s['limit']:>5}s  {s['note'][:80]}")
    tests = summary["tests"]
    if tests:
        print(f"gpu tests: {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
              f"{tests.get('skipped', 0)} skipped")
        for failure in tests.get("failures", [])[:6]:
            print(f"  FAILED {failure[:150]}")
        for reason, count in sorted(tests.get("skip_reasons", {}).items(), key=lambda r: -r[1])[:3]:
            print(f"  skipped {count}: {reason[:100]}")
    for tool, verdict in summary["sanitizer"].items():
        print(f"compute-sanitizer {tool}: {verdict}")
    build = summary["build"]
    if build:
        print(f"kernels: {', '.join(build.get('gencode', []))}; SASS {build.get('elf', '-')}; PTX "
              f"{build.get('ptx', '-')}; {build.get('ops_backend', 'backend not loaded')}")
    for line in summary["key_numbers"][:24]:
        print(line)


# ---------------------------------------------------------------------------------------------- verify
def verify_outputs(out: Path, *, dry_run: bool) -> list[str]:
    """What would not come back (or not be read) from ``out`` by the device tool's rules; [] when fine."""
    problems = []
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > RETURN_FILES:
        problems.append(f"{len(files)} files in $OUT: at most {RETURN_FILES} come back")
    for p in files:
        rel = p.relative_to(out)
        if len(rel.parts) > 3:
            problems.append(f"{rel}: more than two folders down")
        if not all(_NAME.match(part) for part in rel.parts):
            problems.append(f"{rel}: a name with characters outside letters, digits, '.', '_', '-'")
        if p.stat().st_size > RETURN_FILE_LIMIT:
            problems.append(f"{rel}: {p.stat().st_size / MIB:.1f} MiB, over {RETURN_FILE_LIMIT // MIB} MiB")
    if sum(p.stat().st_size for p in files) > RETURN_TOTAL:
        problems.append(f"$OUT holds over {RETURN_TOTAL // MIB} MiB")
    names = {p.name for p in files}
    problems += [f"{name} was not written" for name in OUTPUTS if name not in names]
    problems += [f"{p.relative_to(out)}: not one of the check's outputs" for p in files
                 if p.name not in OUTPUTS]
    try:
        summary = json.loads((out / "summary.json").read_text())
        bench = json.loads((out / "benchmarks.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return problems + [f"summary.json or benchmarks.json unreadable: {exc}"]
    ran = {s["name"]: s for s in summary["steps"]}
    for name in BENCHMARKS:
        if ran.get(name, {}).get("status") == "ok" and name not in bench:
            problems.append(f"{name} finished but left no JSON result")
    if dry_run:
        problems += [f"step {s['name']} {s['status']} in the dry run ({s['note'][:80]})" for s in ran.values()
                     if s["status"] not in ("ok", "skipped")]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    carry = sub.add_parser("carry", help="does the device call fit? prints the run call to make")
    carry.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    carry.add_argument("--carry", nargs="*", default=[".whl"])
    env = sub.add_parser("env", help="write the machine's versions as JSON")
    env.add_argument("--out", type=Path, required=True)
    report = sub.add_parser("report", help="merge results into $OUT; --final also prints the summary")
    report.add_argument("--scratch", type=Path, required=True)
    report.add_argument("--out", type=Path, required=True)
    report.add_argument("--final", action="store_true")
    report.add_argument("--dry-run", action="store_true")
    report.add_argument("--budget", type=int, default=None)
    verify = sub.add_parser("verify", help="check $OUT against what the device tool returns")
    verify.add_argument("--out", type=Path, required=True)
    verify.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "carry":
        fits, text = carry_report(args.root, args.carry)
        print(text)
        return 0 if fits else 1
    if args.command == "env":
        args.out.write_text(json.dumps(environment_record(), indent=2))
        return 0
    if args.command == "report":
        summary = build_summary(args.scratch, args.out, dry_run=args.dry_run, budget=args.budget)
        if args.final:
            print_summary(summary)
        return 0
    problems = verify_outputs(args.out, dry_run=args.dry_run)
    for problem in problems:
        print(f"output problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
