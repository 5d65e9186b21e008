"""The tracker's configuration and the names users type for the sam2 model configs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.errors import ConfigError

# The normalisation sam2's frame loaders apply (sam2.utils.misc.load_video_frames): ImageNet's mean and
# std, on RGB in [0, 1].
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

# What `--tracker NAME` and load_tracker() accept, mapped to the config files shipped inside the sam2
# package (hydra config names, relative to the package).
MODEL_CONFIGS: dict[str, str] = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}
STEP_MODES = ("auto", "grouped", "padded", "graphed")  # TrackerConfig.step
# The long names of the official checkpoints ("tiny", "base_plus") mean the same models.
_ALIASES = {"tiny": "t", "small": "s", "base_plus": "b+", "base-plus": "b+", "large": "l"}


def resolve_model_config(name_or_config: str) -> str:
    """The sam2 config name for a short model name or a config name; ConfigError for anything else.

    ``sam2.1_hiera_t``, ``sam2.1_hiera_tiny`` and ``configs/sam2.1/sam2.1_hiera_t.yaml`` all give
    ``configs/sam2.1/sam2.1_hiera_t.yaml``.
    """
    name = name_or_config.strip()
    if name in MODEL_CONFIGS.values():
        return name
    stem = name.removesuffix(".yaml").rsplit("/", 1)[-1]
    family, _, size = stem.rpartition("_hiera_")
    key = f"{family}_hiera_{_ALIASES.get(size, size)}" if family else stem
    if key in MODEL_CONFIGS:
        return MODEL_CONFIGS[key]
    known = ", ".join(MODEL_CONFIGS)
    raise ConfigError(f"unknown tracker model {name_or_config!r}; use one of {known} "
                      "or a sam2 config name such as configs/sam2.1/sam2.1_hiera_t.yaml")


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """How much the tracker remembers per object, and at what resolution it looks.

    The three caps bound everything the tracker holds, whatever the stream's length:
    - ``num_maskmem`` (N) counts memory frames the way sam2 does: one slot for the conditioning
      (prompted) frames plus N-1 most recent tracked frames. None takes the model's value (7 for every
      sam2.1 config); a smaller N is allowed, a larger one has no learned temporal encoding.
    - ``max_cond_frames`` (C): prompted frames kept per object. The first prompt is always kept; when a
      new one would exceed C, the oldest other one is evicted. Attention cost grows linearly with C: at 4
      an object attends to at most 4 + 6 = 10 frames instead of 7.
    - ``max_obj_ptrs`` (P): object pointers come from the conditioning frames plus the P-1 most recent
      frames, as in sam2. None takes the model's value (16).
    ``evict=False`` keeps every conditioning frame, as the official predictor does; with it (and N, P left
    at the model's values) the tracker selects exactly the memory the official predictor selects.
    """

    image_size: int = 1024  # the model's input side in pixels: a multiple of 32 (hiera's largest stride)
    num_maskmem: int | None = None  # N, see above
    max_cond_frames: int = 4  # C, see above
    max_obj_ptrs: int | None = None  # P, see above
    evict: bool = True  # False: never evict conditioning frames (unbounded under repeated prompts)
    # A prompt on an object the tracker already follows (a re-prompt from the fusion stage) becomes a
    # conditioning frame, so the correction outlives the N-frame window. sam2 calls this
    # add_all_frames_to_correct_as_cond; the official predictor's default is False.
    reprompt_as_cond: bool = True
    # The precision policy (engine.runtime.precision): "exact" runs every part in fp32 (the parity
    # tests' setting); "fast" runs the image encoder in bf16 and, on a CPU, the memory attention, the
    # memory encoder and the mask decoder on propagated frames too (engine.track.bf16; a user's prompt
    # goes through the decoder in fp32: it starts the object's memory); "auto" is "fast" where the device
    # has bf16 matrix instructions (CUDA; CPUs with AMX-BF16 or AVX512-BF16), else "exact".
    precision: str = "auto"
    # The image encoder's dtype: "auto" follows ``precision``; "float32" / "bfloat16" override it.
    encoder_dtype: str = "auto"
    # What runs the image encoder: "torch" (in ``encoder_dtype``: on a CPU in bf16 from a bf16 copy of its
    # weights, engine.track.bf16), or its fp32 ONNX export in "onnxruntime" (CPU; 1.2x torch fp32 there,
    # half the speed of torch bf16 where the CPU has bf16 instructions) or as a "tensorrt" engine (bf16),
    # see engine.track.encoder. The recurrent path always runs in torch.
    encoder_backend: str = "torch"
    # How a frame's objects go through the recurrent path (engine.track.padding, engine.track.step_graphs):
    # "grouped" - one memory-attention call per memory length, no padding (no wasted FLOPs; the CPU's
    #   default, where launches are cheap);
    # "padded" - objects padded to a bucket (1, 2, 4, ... 32) and memories to one length, masked: one call;
    # "graphed" - the padded step replayed from a CUDA graph per layout (no launch overhead; the image
    #   encoder too, when it runs in torch). Where capture fails it runs padded, eagerly, and says so once.
    # "auto": graphed on CUDA, grouped elsewhere.
    step: str = "auto"

    def __post_init__(self) -> None:
        from engine.runtime.precision import PRECISIONS, dtype_named
        from engine.track.encoder import ENCODER_BACKENDS

        if self.encoder_backend not in ENCODER_BACKENDS:
            raise ConfigError(f"encoder_backend={self.encoder_backend!r}: choose from "
                              f"{', '.join(ENCODER_BACKENDS)}")

        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}: choose from {', '.join(PRECISIONS)}")
        dtype_named(self.encoder_dtype, default=torch.float32)  # validates the name
        if self.step not in STEP_MODES:
            raise ConfigError(f"step={self.step!r}: choose from {', '.join(STEP_MODES)}")
        if self.image_size < 32 or self.image_size % 32:
            raise ConfigError(f"image_size={self.image_size}: use a multiple of 32, at least 32 "
                              "(e.g. 512, 1024)")
        if self.num_maskmem is not None and self.num_maskmem < 1:
            raise ConfigError(f"num_maskmem={self.num_maskmem}: use at least 1 (1 keeps only the prompts)")
        if self.max_cond_frames < 1:
            raise ConfigError(f"max_cond_frames={self.max_cond_frames}: use at least 1 (the first prompt)")
        if self.max_obj_ptrs is not None and self.max_obj_ptrs < 1:
            raise ConfigError(f"max_obj_ptrs={self.max_obj_ptrs}: use at least 1")
