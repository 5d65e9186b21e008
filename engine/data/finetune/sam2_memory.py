"""SAM 2's memory path trained on pseudo-videos: two slightly moved views of one labelled image as two frames.

The engine prompts an object once (its first frame) with no memory; after that, the tracker propagates it
through memory attention (the current frame's features conditioned on the object's earlier masks and
pointers), and a re-prompt from the fusion stage runs the mask decoder on those memory-conditioned
features, with the propagated mask as a dense prompt. Training only the prompt encoder and mask decoder
on first-frame (memory-free) features leaves both of those paths as they were: fine for trained weights,
whose memory path already works, but not for random ones, whose memory attention turns the features into
something the decoder never saw.

So each pseudo-video step, as SAM 2 trains on still images (Ravi et al., "SAM 2", 2024, section 5.1: an
image is a one-frame video; here the image and its motion views make a short one, each motion view moved
as far as one frame of a video moves an object: ``sam2_views.augmentation(motion=True)``), for a batch of
instances seen in two of those frames A and B:

1. frame A: a jittered box prompt, no memory (``_forward_sam_heads``, as the tracker's first prompt); its
   mask and object pointer are encoded into memory (``_encode_new_memory``, the model's own); for a share
   of the batch (``memory_truth``) the true mask is encoded instead of the predicted one;
2. frame B, propagated: B's features conditioned on A's memory (``_prepare_memory_conditioned_features``)
   and the mask decoder without a prompt: Dice + BCE, IoU and object-score losses against B's mask;
3. frame B, re-prompted: the same conditioned features, a jittered box of B's mask and the propagated
   mask (clamped as the tracker clamps it) as the dense prompt: the same losses.

What the tracker needs from propagation is that it follows the object its memory holds: several objects
propagated on one frame must come out different. Three things stand in the way from random weights:
views moved by the training augmentation (flips, 10 % shifts) teach that where an object was says
nothing about where it is; random cross-attention reads the whole memory evenly, so every object
gets the same average of its memory, which a few hundred CPU steps do not undo (``locality_prior``);
and a batch of objects from different images can be met by segmenting each image's most salient object,
so a batch holds every object a frame pair shares (``PseudoVideo._draw``), side by side. Otherwise the
decoder learns to segment one salient object whatever the memory holds. And the decoder has to segment a
boxed object at all before a memory of its masks says anything: from random weights with these losses from
the first step it could stay hundreds of steps on a loss plateau, so the prompt path can train alone first
(``Sam2Options.memory_from``).

Trained with the prompt encoder and mask decoder: the memory attention, the memory encoder and the
object-pointer projections (the image encoder, and ``no_mem_embed``, whose features are cached, stay
frozen). A pseudo-video step takes half the batch's instances: at 256 px it costs ~3x an image-only step of
the full batch on a CPU (the memory attention's MLP over every token of the frame dominates). The memory
modules train in eval mode: their dropout (0.1) cost a fifth of the step on the CPU, and a few hundred steps
on a small collection are not where it regularises anything.
"""

from __future__ import annotations

import math

import torch

from engine.errors import ConfigError

MEMORY_MODULES = ("memory_attention", "memory_encoder", "obj_ptr_proj", "obj_ptr_tpos_proj")
MEMORY_PARAMETERS = ("maskmem_tpos_enc", "no_obj_ptr", "no_obj_embed_spatial")
LOCALITY_STRENGTH = 4.0  # locality_prior: logit margin of the same cell over its neighbour
LOCALITY_PAIRS = 8  # locality_prior: rotary frequency pairs per axis that carry the shared component
PREV_LOGIT_CLAMP = 32.0  # the tracker feeds a re-prompt the propagated logits clamped this far (sam2's value)


def locality_prior(model, *, strength: float = LOCALITY_STRENGTH, pairs: int = LOCALITY_PAIRS) -> int:
    """Start memory attention's cross-attention looking at the same place in the memory; returns the
    layers changed.

    SAM 2's cross-attention rotates queries and keys by their positions (RoPE, Su et al. 2021): a
    component that queries and keys share adds ``sum_p |c_p|^2 cos(f_p * offset)`` to every logit,
    largest at offset 0. Random weights share none, so each place attends to the whole memory evenly,
    gets the same average of it whatever object the memory holds, and the gradient that would teach it
    where to look is that average's tiny difference between objects: hundreds of CPU steps from random
    weights did not find it. The prior puts one shared component in the query and key biases, on the
    ``pairs`` fastest-turning rotary frequencies of each axis (the slow ones barely change over the map),
    scaled so the logit at offset 0 exceeds the one at one feature cell by about ``strength``. It stays
    trainable. Only for weights that start random: trained weights have learnt their own attention.
    """
    layers = getattr(getattr(model, "memory_attention", None), "layers", None) or []
    changed = 0
    for layer in layers:
        attn = getattr(layer, "cross_attn_image", None)
        if attn is None or attn.q_proj.bias is None or attn.k_proj.bias is None:
            continue
        dim = attn.internal_dim // attn.num_heads
        if attn.q_proj.out_features != dim or dim % 4:
            continue  # one head whose features RoPE rotates in (x, y) pairs: what the prior is made for
        quarter = dim // 4  # complex pairs per axis; pair p of an axis turns at theta^(-4p/dim) per cell
        theta = float(attn.compute_cis.keywords.get("theta", 10000.0))
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[:quarter].float() / dim))
        fast = torch.arange(min(pairs, quarter))
        drop = float((1.0 - torch.cos(freqs[fast])).sum())  # the logit lost one cell away, per unit weight
        weight = strength * math.sqrt(dim) / max(drop, 1e-6)  # |c_p|^2 of each chosen pair
        bias = torch.zeros(dim)
        for axis in (0, 1):  # x pairs first, then y pairs (sam2's compute_axial_cis)
            real = 2 * (axis * quarter + fast)  # each pair's real part: c_p = sqrt(weight) + 0j
            bias[real] = math.sqrt(weight)
        with torch.no_grad():
            attn.q_proj.bias.copy_(bias.to(attn.q_proj.bias))
            attn.k_proj.bias.copy_(bias.to(attn.k_proj.bias))
        changed += 1
    return changed


def memory_parts(model) -> tuple[dict[str, torch.nn.Module], dict[str, torch.nn.Parameter]]:
    """The memory path's modules and bare parameters that this model has."""
    modules = {n: getattr(model, n) for n in MEMORY_MODULES if isinstance(getattr(model, n, None), torch.nn.Module)}
    params = {n: getattr(model, n) for n in MEMORY_PARAMETERS
              if isinstance(getattr(model, n, None), torch.nn.Parameter)}
    return modules, params


class PseudoVideo:
    """Two-frame pseudo-video losses for a ``Sam2Task`` (see the module docstring)."""

    def __init__(self, task) -> None:
        self.task = task
        model, cache = task.model, task.cache
        frames = task.options.motion_views + 1  # the image itself and its motion views
        if frames < 2:
            raise ConfigError(f"training the memory path needs one motion view of an image at least; got "
                              f"motion_views={task.options.motion_views}")
        cache.ensure([(s, v) for s in task.train_samples for v in range(1, frames)], motion=True,
                     progress=task.options.progress)
        # (sample, frame a, frame b, [(row in a, row in b), ...]): the instances each ordered frame pair shares
        self.groups: list[tuple[int, int, int, list[tuple[int, int]]]] = []
        for s, sample in enumerate(task.train_samples):
            rows = [{k: row for row, k in enumerate(cache.get(sample, v, motion=True).instances.tolist())}
                    for v in range(frames)]
            for a in range(frames):
                for b in range(frames):
                    shared = [(rows[a][k], rows[b][k]) for k in rows[a] if k in rows[b]]
                    if a != b and shared:
                        self.groups.append((s, a, b, shared))
        if not self.groups:
            raise ConfigError("no labelled instance survives two frames of a pseudo-video; label larger objects")
        size = task.options.image_size
        with torch.inference_mode():  # the top level's position encoding: it depends on the size alone
            backbone = model.forward_image(torch.zeros((1, 3, size, size), device=task.device))
        self.pos = backbone["vision_pos_enc"][-1].flatten(2).permute(2, 0, 1).clone()  # [HW, 1, C]

    def loss(self, generator: torch.Generator) -> torch.Tensor:
        task, model = self.task, self.task.model
        frames_a, frames_b = self._draw(max(1, task.options.batch // 2), generator)
        batch = len(frames_a)
        truth_a = torch.stack([view.masks[row] for view, row in frames_a]).to(task.device)
        truth_b = torch.stack([view.masks[row] for view, row in frames_b]).to(task.device)
        embed_a, high_a = task.features([view for view, _ in frames_a])
        embed_b, high_b = task.features([view for view, _ in frames_b])
        no_mem = model.no_mem_embed.view(1, -1, 1, 1)
        memory = self._first_frame(embed_a, high_a, truth_a, generator, no_mem)
        top_b = (embed_b - no_mem).flatten(2).permute(2, 0, 1)  # [HW, B, C]: the features before no_mem_embed
        pix_b = model._prepare_memory_conditioned_features(
            frame_idx=1, is_init_cond_frame=False, current_vision_feats=[top_b],
            current_vision_pos_embeds=[self.pos.expand(-1, batch, -1)], feat_sizes=[tuple(embed_b.shape[-2:])],
            output_dict={"cond_frame_outputs": {0: memory}, "non_cond_frame_outputs": {}}, num_frames=2)
        empty = (torch.zeros((batch, 1, 2), device=task.device), -torch.ones((batch, 1), dtype=torch.int32,
                                                                             device=task.device))
        low, ious, obj = task.heads(pix_b, high_b, *empty, None, model._use_multimask(False, None))
        propagated = task.group_loss(low, ious, obj, truth_b)
        best = low[torch.arange(batch), ious.argmax(1)][:, None]
        previous = torch.where(obj[:, :, None, None] > 0, best, torch.full_like(best, -PREV_LOGIT_CLAMP))
        previous = previous.clamp(-PREV_LOGIT_CLAMP, PREV_LOGIT_CLAMP).detach()
        coords, labels = _boxes(task, truth_b, generator)
        prompt = {"point_labels": labels}
        low, ious, obj = task.heads(pix_b, high_b, coords, labels, previous, model._use_multimask(False, prompt))
        return (propagated + task.group_loss(low, ious, obj, truth_b)) / 2

    def _draw(self, batch: int, generator: torch.Generator) -> tuple[list, list]:
        """``batch`` instances as (view, row) in frames A and B, drawn a whole frame pair at a time: every
        object the pair shares, in a random order, until the batch is full. Objects of one image side by
        side are what makes the memory matter: with one object per image, segmenting the image's most
        salient object whatever the memory holds scores well, and that is the collapse to one mask for
        every track; with its neighbours in the batch, only the memory tells them apart."""
        task = self.task
        frames_a, frames_b = [], []
        while len(frames_a) < batch:
            s, a, b, shared = self.groups[int(torch.randint(len(self.groups), (), generator=generator))]
            sample = task.train_samples[s]
            view_a, view_b = (task.cache.get(sample, v, motion=True) for v in (a, b))
            for i in torch.randperm(len(shared), generator=generator)[:batch - len(frames_a)].tolist():
                frames_a.append((view_a, shared[i][0]))
                frames_b.append((view_b, shared[i][1]))
        return frames_a, frames_b

    def _first_frame(self, embed: torch.Tensor, high: list[torch.Tensor], truth: torch.Tensor,
                     generator: torch.Generator, no_mem: torch.Tensor) -> dict:
        """Frame A as the tracker's first prompt: its memory features and object pointer."""
        model = self.task.model
        coords, labels = _boxes(self.task, truth, generator)
        prompt = {"point_coords": coords, "point_labels": labels}
        outs = model._forward_sam_heads(backbone_features=embed, point_inputs=prompt, mask_inputs=None,
                                        high_res_features=high, multimask_output=model._use_multimask(True, prompt))
        top = (embed - no_mem).flatten(2).permute(2, 0, 1)
        masks = outs[4]  # [B, 1, S, S] the prompt's mask logits, as the tracker encodes them
        truth_share = self.task.options.memory_truth
        if truth_share > 0:
            # The true mask instead, for a share of the pseudo-videos: from random weights the predicted
            # mask is noise at first, and memory attention learns to ignore a memory that says nothing
            # about the object before the decoder's masks become worth remembering.
            use = torch.rand(len(truth), generator=generator) < truth_share
            true_logits = torch.where(truth[:, None], PREV_LOGIT_CLAMP, -PREV_LOGIT_CLAMP).to(masks.dtype)
            masks = torch.where(use.to(masks.device)[:, None, None, None], true_logits, masks)
        features, positions = model._encode_new_memory(current_vision_feats=[top], feat_sizes=[tuple(embed.shape[-2:])],
                                                       pred_masks_high_res=masks, object_score_logits=outs[6],
                                                       is_mask_from_pts=True)
        return {"maskmem_features": features, "maskmem_pos_enc": positions, "obj_ptr": outs[5]}


def _boxes(task, truth: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Jittered box prompts of masks [B, S, S]: ([B, 2, 2] corners, [B, 2] labels 2, 3)."""
    prompts = [task.box_prompt(mask, generator) for mask in truth]
    return (torch.stack([c for c, _ in prompts]).to(task.device),
            torch.stack([lab for _, lab in prompts]).to(task.device))
