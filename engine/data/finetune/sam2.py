"""Fine-tuning SAM 2's prompt encoder and mask decoder on a labelled collection, image encoder frozen.

Each step draws ``batch`` instances from the cached augmented views (``sam2_views``), prompts each with a
box or clicks sampled from its ground-truth mask, and runs the prompt encoder and mask decoder on the
cached features, as SAM 2 does on a prompted frame. The loss, per instance:

- mask: BCE + Dice on the mask logits upsampled to the model's input size (SAM 2's own loss resolution);
  with several candidate masks (a single click is ambiguous) only the best candidate is penalised, as in
  SAM's training (Kirillov et al., ICCV 2023, "minimum loss over the masks");
- IoU head: mean squared error between each candidate's predicted IoU and its actual IoU (SAM's), so the
  tracker keeps choosing the right candidate with the new masks;
- object score: BCE towards "present" (every labelled instance is), so the tracker does not hide the new
  masks behind a negative object score (SAM 2's masks are cut where the score is <= 0).

Prompts follow SAM's training recipe: a box is the mask's box with each side moved by noise of 10% of
its length (at most 20 px); clicks are 1 to ``max_points`` foreground points drawn uniformly from the mask.

The result is a whole sam2 checkpoint, ``{"model": state_dict}`` like the official files, which
``--tracker-weights`` loads (``engine.track.model.load_checkpoint`` checks every key and shape).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.data.dataset import Collection, Sample, read_collection
from engine.data.finetune.common import RunResult, StepOptions, atomic_save, prepare_output, run_steps
from engine.data.finetune.sam2_memory import PseudoVideo, locality_prior, memory_parts
from engine.data.finetune.sam2_views import ViewCache
from engine.errors import ConfigError, DatasetError

RANDOM = "random"


@dataclass(frozen=True, slots=True)
class Sam2Options:
    data: Path  # a collection folder (annotations.json)
    out: Path  # the checkpoint to write
    weights: str  # a sam2 checkpoint path, or "random" (seeded random weights: tests)
    model: str = "sam2.1_hiera_t"
    image_size: int = 1024  # train at the size the tracker will run at
    steps: int = 1000
    batch: int = 8  # instances per step
    lr: float = 1e-4  # AdamW; SAM fine-tunes use 1e-5..1e-4 on trained weights
    views: int = 4  # augmented views per training image (view 0: the image itself)
    box_prompts: float = 0.5  # share of prompts that are boxes (the rest: clicks)
    max_points: int = 3
    val_fraction: float = 0.2  # held out when the collection has no val split
    seed: int = 0
    device: str = "cpu"
    save_every: int = 50
    restart: bool = False
    progress: bool = True
    # Also train the memory path on two-view pseudo-videos (engine.data.finetune.sam2_memory): what weights
    # that start random need for tracking and re-prompting to work; trained weights do without it
    train_memory: bool = False
    # Frames of each pseudo-video besides the image itself: views moved as one video frame moves to the
    # next (``sam2_views.augmentation(motion=True)``), embedded once like the training views
    motion_views: int = 2
    # Share of pseudo-videos whose first frame remembers the true mask rather than the predicted one
    # (``sam2_memory``: what lets memory attention learn while the decoder's masks are still poor)
    memory_truth: float = 0.5
    # Steps of the prompt path alone before the pseudo-video losses join (with ``train_memory``). From
    # random weights the decoder first has to learn to segment a boxed object at all; with the memory path's
    # losses from the first step it can sit for hundreds of steps on a plateau (masks of IoU ~0.2), while
    # alone it leaves the plateau within ~200 steps of a third of the cost each (benchmarks/RESULTS.md)
    memory_from: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1 or self.views < 1 or self.max_points < 1:
            raise ConfigError(f"--batch, --views and max_points must be >= 1, got {self.batch}, {self.views}, "
                              f"{self.max_points}")
        if not 0.0 <= self.memory_truth <= 1.0 or self.motion_views < 0 or self.memory_from < 0:
            raise ConfigError(f"memory_truth must be in [0, 1], motion_views and memory_from >= 0, got "
                              f"{self.memory_truth}, {self.motion_views}, {self.memory_from}")
        if not 0.0 <= self.box_prompts <= 1.0 or not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"box_prompts must be in [0, 1] and val_fraction in (0, 1), got {self.box_prompts}, "
                              f"{self.val_fraction}")
        if self.image_size < 32 or self.image_size % 32:
            raise ConfigError(f"--image-size {self.image_size}: use a multiple of 32 (e.g. 512, 1024)")


def finetune_sam2(options: Sam2Options, *, log=print, between_steps=None) -> RunResult:
    """Fine-tune and write ``options.out``; the run folder (``OUT.run``) holds state, views and report.
    ``between_steps``: see ``common.run_steps``."""
    from engine.track.model import build_model

    collection = read_collection(options.data)
    train, held_out = split_samples(collection, options.val_fraction, options.seed)
    out, run_dir = prepare_output(options.out, restart=options.restart)
    random_weights = str(options.weights) == RANDOM
    if not random_weights and not Path(options.weights).is_file():
        raise ConfigError(f"--weights {options.weights}: no such file; pass a sam2 checkpoint or 'random'")
    model = build_model(options.model, image_size=options.image_size, device=options.device,
                        checkpoint=None if random_weights else options.weights, seed=options.seed)
    if random_weights and options.train_memory:
        locality_prior(model)
    model_key = f"{options.model}:{_encoder_digest(model)}"
    cache = ViewCache(run_dir / "views", model, model_key=model_key, image_size=options.image_size,
                      seed=options.seed)
    cache.ensure([(s, v) for s in train for v in range(options.views)] + [(s, 0) for s in held_out],
                 progress=options.progress)
    task = Sam2Task(model, cache, train, held_out, options)
    fingerprint = {k: str(v) for k, v in asdict(options).items()
                   if k not in ("data", "out", "steps", "device", "save_every", "restart", "progress")}
    fingerprint["data_digest"] = _data_digest(collection)
    step_options = StepOptions(steps=options.steps, lr=options.lr, seed=options.seed,
                               save_every=options.save_every, progress=options.progress)
    with _deterministic():
        return run_steps(task, step_options, run_dir=run_dir, checkpoint=out, fingerprint=fingerprint, log=log,
                         between_steps=between_steps)


def split_samples(collection: Collection, val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Training and held-out images: the collection's own split, or a seeded ``val_fraction`` of it."""
    usable = [s for s in collection.samples if s.rles]
    if not usable:
        raise DatasetError(f"{collection.root}: no image has a labelled instance; label the collected frames first")
    train = [s for s in usable if s.split != "val"]
    held = [s for s in usable if s.split == "val"]
    if not train:
        raise DatasetError(f"{collection.root}: every labelled image is in the val split; nothing to train on")
    if not held and len(train) >= 2:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        count = max(1, round(len(train) * val_fraction))
        held = [train[i] for i in sorted(order[:count])]
        train = [train[i] for i in sorted(order[count:])]
    return train, held


class Sam2Task:
    """The ``StepTask`` of SAM 2: trains ``sam_prompt_encoder`` and ``sam_mask_decoder``."""

    name = "sam2"

    def __init__(self, model, cache: ViewCache, train: list[Sample], held_out: list[Sample],
                 options: Sam2Options) -> None:
        self.model, self.cache, self.options = model, cache, options
        self.train_samples, self.held_out = train, held_out
        model.requires_grad_(False)
        self.modules = {"sam_prompt_encoder": model.sam_prompt_encoder, "sam_mask_decoder": model.sam_mask_decoder}
        self.bare: dict[str, torch.nn.Parameter] = {}  # trained parameters that belong to no submodule
        if options.train_memory:
            modules, self.bare = memory_parts(model)
            self.modules.update(modules)
        self._params = [p for m in self.modules.values() for p in m.parameters()] + list(self.bare.values())
        for p in self._params:
            p.requires_grad_(True)
        # every (sample, view, instance) a step can draw
        self.pool = [(s, v, k) for s, sample in enumerate(train) for v in range(options.views)
                     for k in range(len(cache.get(sample, v).instances))]
        if not self.pool:
            raise DatasetError(f"{options.data}: every labelled instance is smaller than the model can use at "
                               f"{options.image_size} px; label larger objects or raise --image-size")
        self.device = next(model.parameters()).device
        self.video = PseudoVideo(self) if options.train_memory else None

    def parameters(self) -> list[torch.nn.Parameter]:
        return self._params

    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = {f"{name}.{k}": v.detach().clone() for name, m in self.modules.items()
                 for k, v in m.state_dict().items()}
        return state | {f"param.{name}": p.detach().clone() for name, p in self.bare.items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, module in self.modules.items():
            module.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
        with torch.no_grad():
            for name, p in self.bare.items():
                p.copy_(state[f"param.{name}"])

    def export(self, path: Path) -> None:
        atomic_save({"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}, path)

    # -- one step -----------------------------------------------------------------------------------

    def loss(self, generator: torch.Generator, step: int) -> torch.Tensor:
        opts = self.options
        self.model.sam_prompt_encoder.train()
        self.model.sam_mask_decoder.train()  # the memory modules stay in eval mode (sam2_memory: no dropout)
        picks = torch.randint(len(self.pool), (opts.batch,), generator=generator).tolist()
        items = [self.pool[i] for i in picks]
        views = [self.cache.get(self.train_samples[s], v) for s, v, _ in items]
        truth = torch.stack([view.masks[k] for view, (_, _, k) in zip(views, items)]).to(self.device)
        prompts = [self._prompt(mask, generator) for mask in truth]
        groups: dict[int, list[int]] = {}
        for i, (coords, _) in enumerate(prompts):
            groups.setdefault(coords.shape[0], []).append(i)  # same number of prompt points: one call
        total = truth.new_zeros((), dtype=torch.float32)
        for members in groups.values():
            coords = torch.stack([prompts[i][0] for i in members]).to(self.device)
            labels = torch.stack([prompts[i][1] for i in members]).to(self.device)
            embed, high = self.features([views[i] for i in members])
            low, ious, obj = self.heads(embed, high, coords, labels, None,
                                        self.model._use_multimask(True, {"point_labels": labels}))
            total = total + self.group_loss(low, ious, obj, truth[members]) * len(members)
        loss = total / len(items)
        if self.video is None or step < opts.memory_from:
            return loss
        return loss + self.video.loss(generator)

    def _prompt(self, mask: torch.Tensor,  # [S, S] bool
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(points [P, 2] in model pixels, labels [P] int32): a jittered box (labels 2, 3) or clicks (1)."""
        if float(torch.rand((), generator=generator)) < self.options.box_prompts:
            return self.box_prompt(mask, generator)
        ys, xs = torch.nonzero(mask.cpu(), as_tuple=True)
        count = int(torch.randint(1, self.options.max_points + 1, (), generator=generator))
        pick = torch.randint(len(xs), (count,), generator=generator)
        points = torch.stack([xs[pick], ys[pick]], dim=1).float()
        return points, torch.ones(count, dtype=torch.int32)

    def box_prompt(self, mask: torch.Tensor,  # [S, S] bool
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(corners [2, 2] in model pixels, labels [2] int32 = 2, 3): the mask's box, each side moved by
        noise of 10% of its length (at most 20 px)."""
        ys, xs = torch.nonzero(mask.cpu(), as_tuple=True)
        box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
        side = torch.stack([box[2] - box[0], box[3] - box[1]]).repeat(2)
        noise = torch.randn(4, generator=generator) * 0.1 * side
        box = (box + noise.clamp(-20.0, 20.0)).clamp(0, mask.shape[-1])
        box = torch.stack([torch.minimum(box[0], box[2]), torch.minimum(box[1], box[3]),
                           torch.maximum(box[0], box[2]), torch.maximum(box[1], box[3])])
        return box.view(2, 2), torch.tensor([2, 3], dtype=torch.int32)

    def features(self, views) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Cached views' features, batched, as the first frame's prompt path reads them: ([B, C, h, w] with
        ``no_mem_embed`` added, [the two high-resolution levels])."""
        embed = torch.stack([v.image_embed for v in views]).to(self.device).float()
        high = [torch.stack([v.high_res_0 for v in views]).to(self.device).float(),
                torch.stack([v.high_res_1 for v in views]).to(self.device).float()]
        return embed, high

    def heads(self, pix: torch.Tensor, high: list[torch.Tensor], coords: torch.Tensor, labels: torch.Tensor,
              mask_inputs: torch.Tensor | None, multimask: bool):
        """The prompt encoder and mask decoder on features ``pix`` [B, C, h, w], as sam2's
        ``_forward_sam_heads`` runs them but with the raw logits (the loss needs them where the object
        score hides the mask): ([B, M, S/4, S/4] logits, [B, M] IoU predictions, [B, 1] object scores)."""
        model = self.model
        sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask_inputs)
        low, ious, _, obj = model.sam_mask_decoder(
            image_embeddings=pix, image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
            repeat_image=False, high_res_features=high)
        return low.float(), ious.float(), obj.float()

    def group_loss(self, low: torch.Tensor, ious: torch.Tensor, obj: torch.Tensor,
                    truth: torch.Tensor) -> torch.Tensor:  # truth: [B, S, S] bool
        size = truth.shape[-1]
        logits = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)  # [B, M, S, S]
        target = truth[:, None].float().expand_as(logits)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).mean(2)
        prob = torch.sigmoid(logits).flatten(2)
        inter = (prob * target.flatten(2)).sum(2)
        dice = 1.0 - (2.0 * inter + 1.0) / (prob.sum(2) + target.flatten(2).sum(2) + 1.0)
        per_mask = bce + dice  # [B, M]
        best = per_mask.argmin(1, keepdim=True).detach()
        mask_loss = per_mask.gather(1, best).mean()
        with torch.no_grad():
            hard = logits.flatten(2) > 0
            t = target.flatten(2) > 0.5
            actual = (hard & t).sum(2).float() / (hard | t).sum(2).clamp_min(1).float()
        iou_loss = F.mse_loss(ious, actual)
        obj_loss = F.binary_cross_entropy_with_logits(obj, torch.ones_like(obj))
        return mask_loss + iou_loss + obj_loss

    # -- evaluation ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def evaluate(self) -> dict[str, float]:
        """Mean mask IoU at the image's own resolution, each instance prompted with its exact box on view 0,
        through the same path the tracker takes on a prompted frame (``_forward_sam_heads``: the object
        score hides a mask it rates absent)."""
        for m in self.modules.values():
            m.eval()
        out = {"iou_train": _mean(self._ious(self.train_samples))}
        if self.held_out:
            out["iou_held_out"] = _mean(self._ious(self.held_out))
        return out

    def _ious(self, samples: list[Sample]) -> list[float]:
        model = self.model
        ious = []
        for sample in samples:
            view = self.cache.get(sample, 0)
            full = sample.masks()
            for k, mask in zip(view.instances.tolist(), view.masks):
                ys, xs = torch.nonzero(mask, as_tuple=True)
                box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float().view(1, 2, 2)
                prompt = {"point_coords": box.to(self.device),
                          "point_labels": torch.tensor([[2, 3]], dtype=torch.int32, device=self.device)}
                outs = model._forward_sam_heads(
                    backbone_features=view.image_embed[None].to(self.device).float(), point_inputs=prompt,
                    mask_inputs=None, high_res_features=[view.high_res_0[None].to(self.device).float(),
                                                         view.high_res_1[None].to(self.device).float()],
                    multimask_output=model._use_multimask(True, prompt))
                low = outs[3]
                pred = F.interpolate(low, size=(sample.height, sample.width), mode="bilinear",
                                     align_corners=False)[0, 0] > 0
                truth = torch.from_numpy(full[k]).to(pred.device)
                union = (pred | truth).sum()
                ious.append(float((pred & truth).sum() / union) if union else 1.0)
        return ious


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _encoder_digest(model) -> str:
    """A digest of the frozen image encoder's weights: cached views are valid for these weights only."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.image_encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    no_mem = model.no_mem_embed.detach().cpu().contiguous()
    digest.update(no_mem.view(torch.uint8).numpy().tobytes())
    for name, tensor in sorted(model.sam_mask_decoder.state_dict().items()):
        if name.startswith(("conv_s0", "conv_s1")):  # applied inside forward_image: part of the views
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _data_digest(collection: Collection) -> str:
    digest = hashlib.sha256()
    for s in collection.samples:
        digest.update(f"{s.image.name}:{s.split}:{s.width}x{s.height}:{s.class_ids}".encode())
        for rle in s.rles:
            digest.update(rle["counts"] if isinstance(rle["counts"], bytes) else str(rle["counts"]).encode())
    return digest.hexdigest()[:16]


class _deterministic:
    """Deterministic kernels for the run (same seed, same weights), restored afterwards."""

    def __enter__(self):
        self._was = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        return self

    def __exit__(self, *exc) -> None:
        torch.use_deterministic_algorithms(self._was)
