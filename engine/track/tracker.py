"""The streaming SAM 2 tracker: frames are pushed one at a time, objects come and go between any two.

Per frame the image encoder runs once and its features are shared by every object; all live objects then
go through memory attention, the mask decoder and the memory encoder as one batch (batch = objects).

Objects have different memory histories (one added at frame 10 has fewer memory frames and pointers than
one added at frame 0, a re-prompted one has more conditioning frames), so their memories differ in length.
sam2's memory attention has no key mask, so instead of padding, objects are grouped by memory layout
(number of memory frames, number of pointers) and each group is one attention call. Grouping is exact (no
padded keys to mask, sam2's module runs unchanged) and costs no extra FLOPs; its price is one extra call
per extra layout. In a steady stream every object that has been tracked for more than P frames has the
same layout, so there is one group; objects younger than P frames, or with a different number of
prompts, add a group each until they catch up. The mask decoder and memory encoder do not depend on
memory length and always run as one batch.

That is the grouped step, the default on the CPU. On a GPU the per-frame cost at a few objects is kernel
launches, not arithmetic, so there the step pads objects to a bucket and memories to one length, masks
the padded keys, and replays the whole step from a CUDA graph per layout (engine.track.padding,
engine.track.step_graphs; ``TrackerConfig.step`` chooses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import ConfigError
from engine.ops import resize_threshold
from engine.track.appearance import pool_appearance
from engine.track.bf16 import bf16_memory_attention
from engine.track.heads import propagation_heads
from engine.track.config import IMAGE_MEAN, IMAGE_STD, TrackerConfig
from engine.track.memory import (FrameOutput, MemoryFrame, MemoryPolicy, ObjectSlot, assemble_memory,
                                 select_memory)
from engine.track.prompts import PromptHeads, bucket_size
from engine.types import Tracks
_PREV_LOGIT_CLAMP = 32.0  # sam2 clamps the previous logits it feeds back with a correction prompt


@dataclass(frozen=True, slots=True)
class _FrameFeatures:
    """The current frame's image features, computed once and shared by every object."""

    vision_feats: torch.Tensor  # [HW, 1, C] top-level features, flattened as sam2 passes them
    vision_pos: torch.Tensor  # [HW, 1, C] their sine position encoding
    size: tuple[int, int]  # (h, w) of the top level: image_size / 16
    high_res: tuple[torch.Tensor, ...]  # ([1, C/8, 4h, 4w], [1, C/4, 2h, 2w]) for the mask decoder, or ()

    def batch_first(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and position encoding as [HW, B, C] views of batch-first copies: the memory attention
        transposes to batch-first, and its projections then read contiguous rows."""
        feats = self.vision_feats.transpose(0, 1).expand(batch, -1, -1).contiguous().transpose(0, 1)
        pos = self.vision_pos.transpose(0, 1).expand(batch, -1, -1).contiguous().transpose(0, 1)
        return feats, pos

    def expand(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        """Features, position encoding and high-res maps broadcast (as views) to ``batch`` objects."""
        feats = self.vision_feats.expand(-1, batch, -1)
        pos = self.vision_pos.expand(-1, batch, -1)
        high = [x.expand(batch, -1, -1, -1) for x in self.high_res] or None
        return feats, pos, high


@dataclass(slots=True)
class _CurrentFrame:
    index: int
    image: torch.Tensor  # [1, 3, S, S] float32, normalised
    height: int  # the frame's own resolution, for masks
    width: int
    features: _FrameFeatures | None = None  # computed on first use: a frame with no objects costs nothing


def encode_images(model, images: torch.Tensor,  # [B, 3, S, S] float32, normalised
                  *, dtype: torch.dtype = torch.float32, encoder=None) -> list[_FrameFeatures]:
    """The image encoder on a batch of frames (the model's own computing in ``dtype``, or ``encoder``,
    an exported one), split into each frame's features, returned in fp32 for the memory path."""
    if encoder is not None:
        *levels, pos = encoder(images)  # [B, C_i, h_i, w_i] each, as the model's forward_image gives them
        feat_sizes = [tuple(x.shape[-2:]) for x in levels]
        vision_feats = [x.flatten(2).permute(2, 0, 1) for x in levels]  # [h_i * w_i, B, C_i]
        vision_pos = [pos.flatten(2).permute(2, 0, 1)]  # only the last level's is ever read
    else:
        with torch.autocast(images.device.type, dtype=dtype, enabled=dtype != torch.float32):
            backbone_out = model.forward_image(images)
        _, vision_feats, vision_pos, feat_sizes = model._prepare_backbone_features(backbone_out)
    vision_feats = [x.float() for x in vision_feats]
    vision_pos = [x.float() for x in vision_pos]
    out = []
    for b in range(images.shape[0]):
        high_res = tuple(x[:, b:b + 1].permute(1, 2, 0).reshape(1, x.shape[2], *size)
                         for x, size in zip(vision_feats[:-1], feat_sizes[:-1]))
        out.append(_FrameFeatures(vision_feats=vision_feats[-1][:, b:b + 1], vision_pos=vision_pos[-1][:, b:b + 1],
                                  size=tuple(feat_sizes[-1]), high_res=high_res))
    return out


class StreamingTracker:
    """SAM 2 memory propagation over a stream, with bounded per-object memory and batched objects.

    Call ``step(frame)`` once per frame; ``add_object`` / ``remove_object`` between steps. Prompts apply to
    the frame of the latest ``step``.
    """

    def __init__(self, model, *, options: TrackerConfig | None = None, random_weights: bool = False) -> None:
        self.model = model
        self.random_weights = random_weights  # the model was built from its config, not a checkpoint
        opts = options or TrackerConfig(image_size=model.image_size)
        if opts.image_size != model.image_size:
            opts = replace(opts, image_size=model.image_size)
        self.options = opts
        n_model = int(model.num_maskmem)
        n = opts.num_maskmem or n_model
        p_model = int(model.max_obj_ptrs_in_encoder)
        p = opts.max_obj_ptrs or p_model
        if n > n_model:
            raise ConfigError(f"num_maskmem={n}: this model has temporal encodings for {n_model} memory "
                              f"frames; use at most {n_model}")
        if p > p_model:
            raise ConfigError(f"max_obj_ptrs={p}: this model was trained with {p_model} object pointers; "
                              f"use at most {p_model}")
        self._policy = MemoryPolicy(
            model_num_maskmem=n_model,
            recent_frames=max(n - 1, 0),
            ptr_window=p - 1 if model.use_obj_ptrs_in_encoder else 0,
            ptr_pos_scale=p_model - 1,
            max_cond_in_attn=int(model.max_cond_frames_in_attn),
            max_cond=opts.max_cond_frames if opts.evict else None,
        )
        self.device = model.device
        from engine.runtime.precision import PrecisionPolicy, dtype_named

        self.precision = PrecisionPolicy.for_device(self.device, opts.precision)  # and why (its reason)
        self.encoder_dtype = dtype_named(opts.encoder_dtype, default=self.precision.image_encoder)
        self._mean = torch.tensor(IMAGE_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGE_STD, device=self.device).view(1, 3, 1, 1)
        # None: the grouped step (one memory-attention call per memory layout, no padding); else the
        # padded step, eager or replayed from CUDA graphs (engine.track.step_graphs), per ``options.step``
        self._step = _padded_step_for(model, opts, self._policy)
        # The grouped step runs memory attention in the policy's dtype; the padded step always in fp32.
        self.memory_dtype = self.precision.memory_attention if self._step is None else torch.float32
        self.memory_encoder_dtype = self.precision.memory_encoder if self._step is None else torch.float32
        self.mask_decoder_dtype = self.precision.mask_decoder if self._step is None else torch.float32
        self.image_encoder = _image_encoder_for(model, opts, self.encoder_dtype, self._step)
        self._slots: dict[int, ObjectSlot] = {}  # insertion order is slot order
        self._frame: _CurrentFrame | None = None
        self._next_index = 0
        self._maskmem_pos: torch.Tensor | None = None  # [HW, 1, C_mem]: equal for every frame and object
        # Prompts go through sam2's heads with their points padded to a few fixed counts, the padding
        # masked out of the decoder's attention: same outputs, and a bounded set of shapes for a
        # compiled or graphed prompt path (engine.track.prompts).
        self._prompt_heads = PromptHeads(model)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: str = "configs/sam2.1/sam2.1_hiera_t.yaml", *, seed: int = 0,
                    image_size: int | None = None, device: torch.device | str = "cpu",
                    options: TrackerConfig | None = None) -> StreamingTracker:
        """A tracker with random weights built from a sam2 config (``seed`` fixes them)."""
        from engine.track.model import build_model

        opts = _with_image_size(options, image_size)
        return cls(build_model(config, image_size=opts.image_size, device=device, seed=seed), options=opts,
                   random_weights=True)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, config: str = "configs/sam2.1/sam2.1_hiera_t.yaml",
                        image_size: int | None = None, device: torch.device | str = "cpu",
                        options: TrackerConfig | None = None) -> StreamingTracker:
        """A tracker with the weights of a sam2 checkpoint; WeightsError names a bad file."""
        from engine.track.model import build_model

        opts = _with_image_size(options, image_size)
        model = build_model(config, image_size=opts.image_size, device=device, checkpoint=path)
        return cls(model, options=opts)

    # ------------------------------------------------------------------ public API
    @property
    def object_ids(self) -> list[int]:
        return list(self._slots)

    @property
    def frame_index(self) -> int:
        """Index of the latest stepped frame (0-based since construction or ``reset``); -1 before any."""
        return self._frame.index if self._frame is not None else -1

    @torch.inference_mode()
    def step(self, frame: np.ndarray | torch.Tensor) -> Tracks:  # frame: [H, W, 3] uint8 RGB
        """Propagate every object to ``frame``; returns their masks in slot order."""
        self._push(frame)
        return self._propagate()

    @staticmethod
    @torch.inference_mode()
    def step_streams(trackers: Sequence[StreamingTracker],
                     frames: Sequence[np.ndarray | torch.Tensor]) -> list[Tracks]:
        """Step several streams' trackers at once, one frame each: the image encoder runs once, on the
        batch of frames whose trackers have objects. The trackers must share one model (build one
        tracker, then ``StreamingTracker(tracker.model, options=...)`` for each further stream)."""
        if len(trackers) != len(frames):
            raise ValueError(f"step_streams got {len(trackers)} trackers and {len(frames)} frames")
        if trackers and any(t.model is not trackers[0].model for t in trackers):
            raise ValueError("step_streams needs trackers that share one model")
        for tracker, frame in zip(trackers, frames):
            tracker._push(frame)
        busy = [t for t in trackers if t._slots]
        if len(busy) > 1:
            features = encode_images(busy[0].model, torch.cat([t._frame.image for t in busy]),
                                     dtype=busy[0].encoder_dtype, encoder=busy[0].image_encoder)
            for tracker, feats in zip(busy, features):
                tracker._frame.features = feats
        return [tracker._propagate() for tracker in trackers]

    def _push(self, frame: np.ndarray | torch.Tensor) -> None:
        """Make ``frame`` the current frame (its image features are computed when first needed)."""
        self._encode_pending_memory()
        image, height, width = self._preprocess(frame)
        self._frame = _CurrentFrame(index=self._next_index, image=image, height=height, width=width)
        self._next_index += 1

    def _propagate(self) -> Tracks:
        slots = list(self._slots.values())
        if not slots:
            return self._empty_tracks()
        index = self._frame.index
        for slot in slots:
            # Forget only now, not after the previous step: a prompt on that frame still needed its window.
            slot.forget_before(feature_frame=index - self._policy.recent_frames,
                               ptr_frame=index - self._policy.ptr_window)
        feats = self._features()
        if self._step is not None:
            selections = [select_memory(slot, index, self._policy) for slot in slots]
            out = self._step(feats, selections, self._maskmem_pos)
            # each field is one new [n, ...] tensor: the objects keep views of it, as their own
            low_res, obj_ptr, scores, mem_feats = out.low_res, out.obj_ptr, out.scores, out.memory
            owned = True
        else:
            low_res, obj_ptr, scores, mem_feats = self._grouped_step(slots, feats)
            owned = False
        for i, (slot, feat) in enumerate(zip(slots, mem_feats.unbind(0))):
            slot.recent_features[index] = feat if owned else feat.clone()
            slot.recent_ptrs[index] = obj_ptr[i] if owned else obj_ptr[i].clone()
            slot.output = FrameOutput(frame=index, logits=low_res[i:i + 1], score=scores[i:i + 1],
                                      obj_ptr=obj_ptr[i:i + 1])
        return self._tracks([s.obj_id for s in slots], low_res, scores, obj_ptr)

    def _grouped_step(self, slots: list[ObjectSlot], feats: _FrameFeatures
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(low_res [B, 1, 4h, 4w], obj_ptr [B, C], scores [B, 1], memory [B, C_mem, h, w] bf16) for
        ``slots``: memory attention per memory layout, then the heads and the memory encoder batched."""
        _, _, high_res = feats.expand(len(slots))
        pix_feat = self._condition_on_memory(slots, feats)
        with _autocast(self.device, self.mask_decoder_dtype):
            low_res, high_res_masks, obj_ptr, scores = propagation_heads(
                self.model, pix_feat, high_res, multimask=bool(self.model._use_multimask(False, None)))
        mem_feats = self._encode_memory(feats, high_res_masks, scores, from_prompt=False)
        return low_res, obj_ptr, scores, mem_feats

    @torch.inference_mode()
    def add_object(self, obj_id: int, *, box: Sequence[float] | torch.Tensor | None = None,
                   points: Sequence[Sequence[float]] | torch.Tensor | None = None,
                   labels: Sequence[int] | torch.Tensor | None = None,
                   mask: np.ndarray | torch.Tensor | None = None) -> Tracks:
        """Prompt object ``obj_id`` on the current frame; returns its mask there.

        Args:
            box: [x1, y1, x2, y2] in frame pixels.
            points: [[x, y], ...] in frame pixels, with ``labels`` (1 foreground, 0 background).
            mask: [H, W] bool at frame resolution. Not combined with box or points.
        A new id starts a new object; a known id is re-prompted (a correction on this frame).
        """
        frame = self._frame
        if frame is None:
            raise ConfigError(f"add_object({obj_id}) before any step(): push the frame to prompt on first")
        point_inputs, mask_inputs = self._prompt_inputs(obj_id, box=box, points=points, labels=labels,
                                                        mask=mask)
        feats = self._features()
        slot = self._slots.get(obj_id) or ObjectSlot(obj_id=int(obj_id), first_frame=frame.index)
        is_init = slot.first_frame == frame.index
        current = slot.output if slot.output is not None and slot.output.frame == frame.index else None
        vision_feats, vision_pos, high_res = feats.expand(1)
        model = self.model
        if mask_inputs is not None and model.use_mask_input_as_output_without_sam:
            pix_feat = vision_feats.permute(1, 2, 0).reshape(1, model.hidden_dim, *feats.size)
            outs = model._use_mask_as_output(pix_feat, high_res, mask_inputs)
        else:
            if is_init:
                pix_feat = model._prepare_memory_conditioned_features(
                    frame_idx=frame.index, is_init_cond_frame=True, current_vision_feats=[vision_feats],
                    current_vision_pos_embeds=[vision_pos], feat_sizes=[feats.size], output_dict={},
                    num_frames=None)
            else:
                pix_feat = self._condition_on_memory([slot], feats)
            if current is not None and point_inputs is not None:
                # A second prompt on the same frame refines the first, as in sam2's interactive predictor.
                mask_inputs = torch.clamp(current.logits, -_PREV_LOGIT_CLAMP, _PREV_LOGIT_CLAMP)
            # multimask follows the user's point count, before padding
            outs = self._prompt_heads.forward_sam_heads(
                backbone_features=pix_feat, point_inputs=point_inputs, mask_inputs=mask_inputs,
                high_res_features=high_res, multimask_output=model._use_multimask(is_init, point_inputs))
        low_res, obj_ptr, score = outs[3], outs[5], outs[6]
        slot.output = FrameOutput(frame=frame.index, logits=low_res, score=score, obj_ptr=obj_ptr)
        slot.pending_cond = is_init or self.options.reprompt_as_cond
        self._slots[slot.obj_id] = slot
        return self._tracks([slot.obj_id], low_res, score, obj_ptr)

    def remove_object(self, obj_id: int) -> bool:
        """Forget ``obj_id`` and all its memory; the others are untouched. False if it was not tracked."""
        return self._slots.pop(obj_id, None) is not None

    def reset(self) -> None:
        """Forget every object and the current frame; the next step is frame 0 of a new stream."""
        self._slots.clear()
        self._frame = None
        self._next_index = 0

    def memory_bytes(self, *, weights: bool = False) -> int:
        """Bytes of every tensor the tracker holds (each storage counted once); weights only if asked."""
        held: list[torch.Tensor] = []
        for slot in self._slots.values():
            held += slot.tensors()
        if self._frame is not None:
            held.append(self._frame.image)
            if self._frame.features is not None:
                f = self._frame.features
                held += [f.vision_feats, f.vision_pos, *f.high_res]
        held += [self._mean, self._std]
        if self._maskmem_pos is not None:
            held.append(self._maskmem_pos)
        if weights:
            held += list(self.model.parameters()) + list(self.model.buffers())
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}
        return int(sum(storages.values()))

    # ------------------------------------------------------------------ internals
    def _preprocess(self, frame) -> tuple[torch.Tensor, int, int]:
        image = torch.as_tensor(frame)
        if image.dim() != 3 or image.shape[2] != 3 or image.dtype != torch.uint8:
            raise ValueError(f"frame must be [H, W, 3] uint8 RGB, got {tuple(image.shape)} {image.dtype}")
        height, width = int(image.shape[0]), int(image.shape[1])
        x = image.to(self.device, non_blocking=True).permute(2, 0, 1).unsqueeze(0).float() / 255.0
        size = self.model.image_size
        if (height, width) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self._mean) / self._std, height, width

    def _features(self) -> _FrameFeatures:
        frame = self._frame
        if frame.features is None:
            frame.features = encode_images(self.model, frame.image, dtype=self.encoder_dtype,
                                           encoder=self.image_encoder)[0]
        return frame.features

    def _condition_on_memory(self, slots: list[ObjectSlot], feats: _FrameFeatures) -> torch.Tensor:
        """Memory attention for ``slots`` on the current frame, one call per memory layout.

        Returns [B, C, h, w] features in the order of ``slots``.
        """
        index = self._frame.index
        selections = [select_memory(slot, index, self._policy) for slot in slots]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, sel in enumerate(selections):
            groups.setdefault(sel.layout, []).append(i)
        h, w = feats.size
        out = None
        for members in groups.values():
            memory, memory_pos, num_ptr_tokens = assemble_memory(
                self.model, [selections[i] for i in members], self._maskmem_pos, self._policy)
            curr, curr_pos = feats.batch_first(len(members))
            if self.memory_dtype == torch.float32:
                pix = self.model.memory_attention(curr=[curr], curr_pos=[curr_pos], memory=memory,
                                                  memory_pos=memory_pos, num_obj_ptr_tokens=num_ptr_tokens)
            else:
                pix = bf16_memory_attention(self.model, curr, curr_pos, memory, memory_pos,
                                            num_obj_ptr_tokens=num_ptr_tokens, dtype=self.memory_dtype)
            # NCHW-contiguous, as the decoder's own position encoding is: their sums then run in memory order
            pix = pix.permute(1, 2, 0).reshape(len(members), -1, h, w).contiguous()
            if len(groups) == 1:
                return pix
            if out is None:
                out = pix.new_empty((len(slots), *pix.shape[1:]))
            out[members] = pix
        return out

    def _encode_memory(self, feats: _FrameFeatures, high_res_masks: torch.Tensor,  # [B, 1, S, S]
                       scores: torch.Tensor, *, from_prompt: bool) -> torch.Tensor:  # scores: [B, 1]
        """The memory encoder on a batch of masks; returns [B, C_mem, h, w] bfloat16."""
        vision_feats, _, _ = feats.expand(high_res_masks.shape[0])
        with _autocast(self.device, self.memory_encoder_dtype):
            mem, pos = self.model._encode_new_memory(
                current_vision_feats=[vision_feats], feat_sizes=[feats.size], pred_masks_high_res=high_res_masks,
                object_score_logits=scores, is_mask_from_pts=from_prompt)
        if self._maskmem_pos is None:
            self._maskmem_pos = pos[-1][0:1].flatten(2).permute(2, 0, 1).float().clone()
        return mem.to(torch.bfloat16)

    def _encode_pending_memory(self) -> None:
        """Encode the memory of outputs that prompts made on the previous frame, in one batch."""
        pending = [s for s in self._slots.values() if s.pending_cond is not None]
        if not pending:
            return
        feats = self._features()
        logits = torch.cat([s.output.logits for s in pending])
        size = self.model.image_size
        high_res = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
        scores = torch.cat([s.output.score for s in pending])
        mem_feats = self._encode_memory(feats, high_res, scores, from_prompt=True)
        window = self._policy.recent_frames
        for slot, feat in zip(pending, mem_feats.unbind(0)):
            out = slot.output
            entry = MemoryFrame(frame=out.frame, features=feat.clone(), obj_ptr=out.obj_ptr[0].clone())
            if slot.pending_cond:
                slot.add_cond(entry, max_cond=self._policy.max_cond, window=window)
            else:
                slot.recent_features[out.frame] = entry.features
                slot.recent_ptrs[out.frame] = entry.obj_ptr
            slot.pending_cond = None

    def _prompt_inputs(self, obj_id, *, box, points, labels, mask):
        """sam2's point_inputs dict ([1, P, 2] model-pixel coords, [1, P] int32 labels) or a [1, 1, S, S]
        mask, from prompts in frame pixels."""
        frame = self._frame
        size = self.model.image_size
        if mask is not None:
            if box is not None or points is not None:
                raise ConfigError(f"add_object({obj_id}): give a mask, or a box and/or points, not both")
            m = torch.as_tensor(mask, device=self.device)
            if m.dim() != 2 or tuple(m.shape) != (frame.height, frame.width):
                raise ConfigError(f"add_object({obj_id}): mask must be [{frame.height}, {frame.width}] like "
                                  f"the frame, got {tuple(m.shape)}")
            m = m.bool().float()[None, None]
            if m.shape[-2:] != (size, size):
                m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
                m = (m >= 0.5).float()
            return None, m
        coords, codes = [], []
        if box is not None:
            b = torch.as_tensor(box, dtype=torch.float32).flatten().cpu()
            if b.numel() != 4 or not torch.isfinite(b).all() or b[2] < b[0] or b[3] < b[1]:
                raise ConfigError(f"add_object({obj_id}): box must be [x1, y1, x2, y2] with x1 <= x2, "
                                  f"y1 <= y2, got {box!r}")
            coords.append(b.view(2, 2))
            codes.append(torch.tensor([2, 3], dtype=torch.int32))  # sam2's box-corner labels
        if points is not None or labels is not None:
            p = torch.as_tensor(points if points is not None else [], dtype=torch.float32)
            p = p.reshape(-1, 2).cpu()
            lab = torch.as_tensor(labels if labels is not None else [], dtype=torch.int32).flatten().cpu()
            if points is None or labels is None or p.shape[0] != lab.shape[0] or p.shape[0] == 0:
                raise ConfigError(f"add_object({obj_id}): points [[x, y], ...] need one label each "
                                  f"(1 foreground, 0 background), got {points!r} and {labels!r}")
            if not bool(torch.isfinite(p).all()):
                raise ConfigError(f"add_object({obj_id}): point coordinates must be finite, got {points!r}")
            if not bool(((lab == 0) | (lab == 1)).all()):
                raise ConfigError(f"add_object({obj_id}): point labels must be 0 or 1, got {labels!r}")
            coords.append(p)
            codes.append(lab)
        if not coords:
            raise ConfigError(f"add_object({obj_id}): give a box, points with labels, or a mask")
        bucket_size(sum(len(c) for c in coords))  # too many points for one prompt: say so before any work
        xy = torch.cat(coords) / torch.tensor([frame.width, frame.height], dtype=torch.float32) * size
        return {"point_coords": xy[None].to(self.device),
                "point_labels": torch.cat(codes)[None].to(self.device)}, None

    def _tracks(self, obj_ids: list[int], low_res: torch.Tensor,  # [N, 1, h, w]
                scores: torch.Tensor,  # [N, 1]
                obj_ptr: torch.Tensor) -> Tracks:  # [N, C]
        frame = self._frame
        logits = low_res[:, 0].float()
        # What identifies each object for re-identification (engine.track.appearance): the image
        # encoder's top-level features, before memory attention, pooled under its mask.
        feats = frame.features
        top = feats.vision_feats[:, 0].transpose(0, 1).reshape(-1, *feats.size)  # [C, h/4, w/4]
        embeddings, _ = pool_appearance(top, logits)
        # Bilinear upsampling then logit > 0, as sam2's predictor does (its CUDA kernel where built).
        return Tracks(obj_ids=obj_ids, masks=resize_threshold(logits, size=(frame.height, frame.width)),
                      logits=logits, scores=scores[:, 0].float(), embeddings=embeddings,
                      pointers=obj_ptr.reshape(len(obj_ids), -1).float())

    def _empty_tracks(self) -> Tracks:
        frame, low = self._frame, self.model.image_size // 4
        return Tracks(obj_ids=[], masks=torch.zeros((0, frame.height, frame.width), dtype=torch.bool,
                                                    device=self.device),
                      logits=torch.zeros((0, low, low), device=self.device),
                      scores=torch.zeros((0,), device=self.device))


def _autocast(device: torch.device, dtype: torch.dtype):
    """``torch.autocast`` to ``dtype`` on ``device``, off for float32. Autocast (not a bf16 copy) for the
    memory encoder and the mask decoder: their weights are small (~1.4M and ~4M parameters), so casting
    them per call costs little, and the prompt path keeps the same fp32 modules."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def _image_encoder_for(model, options: TrackerConfig, dtype: torch.dtype, step):
    """What runs the image encoder: None for the model's own in torch (autocast to ``dtype``), a bf16 copy
    on a CPU (engine.track.bf16), an exported one (engine.track.encoder) or a CUDA graph of it."""
    device = torch.device(model.device)
    if options.encoder_backend != "torch":
        from engine.track.encoder import exported_image_encoder

        return exported_image_encoder(model, options.encoder_backend, device=device)
    if step is not None and step.graphed:
        from engine.track.step_graphs import GraphedImageEncoder

        return GraphedImageEncoder(model, dtype)
    if device.type == "cpu" and dtype == torch.bfloat16:
        from engine.track.bf16 import Bf16ImageEncoder

        return Bf16ImageEncoder(model)
    return None


def _padded_step_for(model, options: TrackerConfig, policy: MemoryPolicy):
    """The padded step ``options.step`` asks for (``auto``: graphed on CUDA), or None for grouped."""
    device = torch.device(model.device)
    mode = options.step if options.step != "auto" else ("graphed" if device.type == "cuda" else "grouped")
    if mode == "grouped":
        return None
    from engine.track.padding import StepConstants
    from engine.track.step_graphs import GraphedStep, PaddedStep

    side = int(model.sam_image_embedding_size)
    constants = StepConstants(
        hw=side * side, split=int(model.hidden_dim) // int(model.mem_dim),
        min_frames=1 + policy.recent_frames, min_ptrs=1 + policy.ptr_window if policy.ptr_window else 0,
        ptr_pos_scale=policy.ptr_pos_scale, multimask=bool(model._use_multimask(False, None)))
    return GraphedStep(model, constants) if mode == "graphed" else PaddedStep(model, constants)


def _with_image_size(options: TrackerConfig | None, image_size: int | None) -> TrackerConfig:
    opts = options or TrackerConfig()
    return replace(opts, image_size=image_size) if image_size is not None else opts
