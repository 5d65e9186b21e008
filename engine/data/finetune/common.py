"""What every step-based fine-tune shares: the run folder, resuming, determinism, the report.

A fine-tune writing ``CHECKPOINT`` keeps its work in ``CHECKPOINT.run/`` beside it: ``state.pt`` (the
trainable weights, optimizer, step, random generators and loss history, rewritten atomically every
``save_every`` steps), caches, and the report (``loss.png``, ``report.json``, ``report.md``). Running the
same command again continues from ``state.pt``: a killed fine-tune resumes where it last saved, and gives
the same weights as one that was never interrupted. ``restart`` discards the state (not the caches).

A task plugs into ``run_steps`` through ``StepTask``: SAM 2 (``engine.data.finetune.sam2``) is one; a
semantic-segmentation fine-tune (Dice + CE) would be another, with its own model, batches and metric.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from engine.errors import ConfigError, SinkError

STATE_FILE = "state.pt"


class StepTask(Protocol):
    """A model to fine-tune by gradient steps."""

    name: str

    def parameters(self) -> list[torch.nn.Parameter]: ...  # what the optimizer updates

    def trainable_state(self) -> dict[str, torch.Tensor]: ...  # those parameters' values, for state.pt

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None: ...

    def loss(self, generator: torch.Generator, step: int) -> torch.Tensor: ...  # one batch, drawn with ``generator``

    def evaluate(self) -> dict[str, float]: ...  # metrics on the held-out (and training) split

    def export(self, path: Path) -> None: ...  # the checkpoint the engine loads


@dataclass(frozen=True, slots=True)
class StepOptions:
    steps: int
    lr: float
    seed: int = 0
    weight_decay: float = 0.01
    clip_grad: float = 1.0  # gradient norm clip: one odd batch must not undo the pre-trained weights
    save_every: int = 50  # steps between state saves (what a kill can lose)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.save_every < 1:
            raise ConfigError(f"save_every must be >= 1, got {self.save_every}")


@dataclass(frozen=True, slots=True)
class RunResult:
    checkpoint: Path
    run_dir: Path
    steps: int
    resumed_from: int  # the step the run continued from (0: a fresh run)
    losses: tuple[float, ...]  # one per step
    before: dict[str, float]  # metrics with the initial weights
    after: dict[str, float]  # metrics with the fine-tuned weights


def run_dir_for(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".run")


def prepare_output(checkpoint: str | os.PathLike, *, restart: bool) -> tuple[Path, Path]:
    """Check that ``checkpoint`` can be written and make its run folder; one-line SinkError if not."""
    out = Path(checkpoint)
    if out.is_dir():
        raise SinkError(f"--out {out} is a folder; give the checkpoint's file path (e.g. {out}/model.pt)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise SinkError(f"cannot write --out {out}: folder {parent} does not exist; create it or choose another")
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise SinkError(f"cannot write --out {out}: permission denied; choose a writable folder")
    run = run_dir_for(out)
    if restart and (run / STATE_FILE).exists():
        (run / STATE_FILE).unlink()
    try:
        run.mkdir(exist_ok=True)
        probe = run / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SinkError(f"cannot write the run folder {run}: {exc.strerror}; choose a writable --out") from None
    return out, run


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename: a kill leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise SinkError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def run_steps(task: StepTask, options: StepOptions, *, run_dir: Path, checkpoint: Path,
              fingerprint: dict, log: Callable[[str], None] = print,
              between_steps: Callable[[int], None] | None = None) -> RunResult:
    """Fine-tune ``task`` for ``options.steps`` AdamW steps, resuming from ``run_dir/state.pt`` when it
    holds a run with the same ``fingerprint`` (the settings that change the result, except steps).
    ``between_steps(step)`` runs on this thread before each step (what a caller may change between steps
    without changing the result, such as the torch threads once other work has freed cores)."""
    generator = torch.Generator().manual_seed(options.seed)
    optimizer = torch.optim.AdamW(task.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    state = _load_state(run_dir, fingerprint)
    losses: list[float] = []
    if state is None:
        before = task.evaluate()
        start = 0
    else:
        task.load_trainable_state(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        losses, before, start = list(state["losses"]), dict(state["before"]), int(state["step"])
        log(f"{task.name}: resuming from step {start} of {options.steps} ({run_dir / STATE_FILE})")
    if start > options.steps:
        raise ConfigError(f"{run_dir / STATE_FILE} is already at step {start}, past --steps {options.steps}; "
                          "raise --steps or pass --restart")
    from tqdm import tqdm

    bar = tqdm(total=options.steps, initial=start, desc=f"fine-tune {task.name}", unit="step",
               disable=not options.progress, dynamic_ncols=True)
    try:
        for step in range(start, options.steps):
            if between_steps is not None:
                between_steps(step)
            loss = task.loss(generator, step)
            if not torch.isfinite(loss):
                raise ConfigError(f"{task.name}: the loss became {float(loss)} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(task.parameters(), options.clip_grad)
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            done = step + 1
            if done % options.save_every == 0 or done == options.steps:
                atomic_save({"step": done, "trainable": task.trainable_state(), "optimizer": optimizer.state_dict(),
                             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                             "losses": losses, "before": before, "fingerprint": fingerprint},
                            run_dir / STATE_FILE)
    finally:
        bar.close()
    after = task.evaluate()
    task.export(checkpoint)
    result = RunResult(checkpoint=checkpoint, run_dir=run_dir, steps=options.steps, resumed_from=start,
                       losses=tuple(losses), before=before, after=after)
    write_report(result, task.name, fingerprint)
    return result


def _load_state(run_dir: Path, fingerprint: dict) -> dict | None:
    path = run_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (torch.load fails with many types; any means the file is unusable)
        raise ConfigError(f"{path} is damaged; pass --restart to begin the fine-tune again") from None
    if state.get("fingerprint") != fingerprint:
        old = state.get("fingerprint") or {}
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in fingerprint.items() if old.get(k) != v)
        raise ConfigError(f"{run_dir} holds a fine-tune with other settings ({diff}); pass --restart to discard "
                          "it, or choose another --out")
    return state


def write_report(result: RunResult, name: str, settings: dict) -> None:
    """``loss.png`` (the loss per step and its moving average), ``report.json`` and ``report.md``."""
    run = result.run_dir
    plot_losses(result.losses, run / "loss.png", title=f"{name} fine-tune")
    summary = {"task": name, "steps": result.steps, "resumed_from": result.resumed_from,
               "checkpoint": str(result.checkpoint), "settings": settings, "before": result.before,
               "after": result.after, "loss_first": result.losses[0] if result.losses else None,
               "loss_last": result.losses[-1] if result.losses else None}
    (run / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    rows = [f"| {k} | {result.before.get(k, float('nan')):.4f} | {result.after.get(k, float('nan')):.4f} |"
            for k in sorted(set(result.before) | set(result.after))]
    text = [f"# {name} fine-tune", "", f"Checkpoint: `{result.checkpoint}` after {result.steps} steps"
            + (f" (resumed at step {result.resumed_from})" if result.resumed_from else "") + ".", "",
            "| metric | before | after |", "| --- | ---: | ---: |", *rows, "", "Loss per step: `loss.png`.", ""]
    (run / "report.md").write_text("\n".join(text))


def plot_losses(losses: tuple[float, ...] | list[float], path: Path, *, title: str) -> None:
    from matplotlib.figure import Figure  # without pyplot: no global backend or figure state

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    steps = range(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss")
    window = max(1, len(losses) // 20)
    if window > 1:
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, lw=1.5, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if losses and min(losses) > 0 and max(losses) / min(losses) > 20:
        ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def copy_atomic(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise SinkError(f"cannot write {target}: {exc.strerror}") from None


def finite_mean(values: list[float]) -> float:
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")
