"""Model configuration: a dataclass serialised to JSON beside the weights. Presets are data."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lldif_edge.data import FER_CLASSES


@dataclass
class ModelConfig:
    preset: str = "base"
    classes: list[str] = field(default_factory=lambda: list(FER_CLASSES))
    # Input spec: a square face crop, uint8 -> [0,1]; grayscale faces are replicated to `in_chans` channels.
    input_size: int = 48
    in_chans: int = 3
    grayscale: bool = True
    prior: bool = True  # False: the ablation, LLformer without the EPD
    equalize: bool = False  # per-image histogram equalisation before the standardisation (ImageEqualize)
    # LLformer: conv stem stages (channels, residual blocks at that stage), then transformer blocks.
    # About 127 M multiply-accumulates per face at inference: the scale of a 200-MFLOP reference CNN,
    # conv-heavy so that INT8 pays off on VNNI CPUs; one bf16 epoch of FER2013 is ~95 s on one AMX core.
    stem_channels: tuple[int, ...] = (32, 64, 128)
    stem_blocks: tuple[int, ...] = (0, 1, 1)
    embed_dim: int = 128
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    # FiLM adapters: after every stem stage (and the patch embedding) a per-channel scale and shift made from the
    # EPD, the last layer zero-initialised, so a prior model starts out as exactly its image branch.
    stage_adapters: bool = False
    # Prior: LA-CLIP, PNET, condition encoder, denoiser.
    clip_dim: int = 64
    epd_dim: int = 64
    encoder_channels: tuple[int, ...] = (16, 32, 64)
    # The condition encoder's stage widths; None: encoder_channels, as LA-CLIP's. It runs at inference, so
    # `lldif-edge distill --cond-channels` can make it smaller than the LA-CLIP encoder it was trained from.
    cond_channels: tuple[int, ...] | None = None
    # Convolutions per stage of the condition encoder: 2 (a strided one and a plain one, as LA-CLIP's) or 1. On a
    # CPU its time is mostly per-layer overhead, so layers, not widths, set it (`distill --cond-convs`).
    cond_convs: int = 2
    cond_dim: int = 64
    denoiser_hidden: int = 128
    # Diffusion: linear beta schedule over T training steps; the reference sampler takes S DDIM steps.
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sample_steps: int = 20
    noise_seed: int = 0

    @property
    def cond_widths(self) -> tuple[int, ...]:
        return self.cond_channels or self.encoder_channels

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) and k != "classes" else v) for k, v in d.items() if k in known}
        return cls(**kw)


PRESETS: dict[str, dict] = {
    "base": {},
    "tiny": dict(
        stem_channels=(8, 16, 24), stem_blocks=(0, 1, 0), embed_dim=32, depth=1, heads=2, mlp_ratio=2.0,
        clip_dim=16, epd_dim=16, encoder_channels=(8, 12, 16), cond_dim=16, denoiser_hidden=32,
        timesteps=100, sample_steps=8,
    ),
    # Half the base widths (a quarter of its 121 M MACs): recipe experiments on CPUs without native bf16, where a
    # base epoch takes 454 s on one AVX2 core (AMD EPYC) against ~95 s on one AMX core.
    "small": dict(
        stem_channels=(16, 32, 64), embed_dim=64, heads=2,
        clip_dim=32, epd_dim=32, encoder_channels=(8, 16, 32), cond_dim=32, denoiser_hidden=64,
    ),
    # The plain-CNN baseline of the model card: the LLformer's residual conv stem one stage deeper, no
    # transformer blocks and no prior (train it with --no-prior); 164 M multiply-adds, more than base's 127 M.
    "cnn": dict(stem_channels=(32, 64, 128, 256), stem_blocks=(0, 1, 1, 1), embed_dim=256, depth=0),
    # The second design: the residual CNN family at about 100 M MACs a face with the prior (each residual block
    # costs the same 24 M MACs at every stage), the EPD entering every stage through FiLM adapters. With
    # --no-prior it is the plain CNN that LLDif's image branch starts from, and the fair ablation.
    "rescnn": dict(stem_channels=(32, 48, 96, 192), stem_blocks=(0, 1, 1, 1), embed_dim=192, depth=0,
                   stage_adapters=True),
}


def preset_config(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        from lldif_edge.errors import LldifError

        raise LldifError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return ModelConfig(preset=name, **{**PRESETS[name], **overrides})
