"""LLDif, our reconstruction (docs/design.md, section 1): LA-CLIP + PNET make the EPD; the LLformer classifies
conditioned on it; at test time a condition encoder and a small diffusion model recover the EPD.

Every image-taking module starts with `ImageStandardize`, so exported sub-graphs take plain [0,1] pixels
and the model itself removes the global brightness and contrast that low light takes away.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from lldif_edge.errors import LldifError
from lldif_edge.lldif.config import ModelConfig
from lldif_edge.lldif.diffusion import ddim_sample, ddim_timesteps, linear_alphas_cumprod


class ImageStandardize(nn.Module):
    """Per-image zero mean, unit variance: a dark face and a bright face look alike to what follows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-4)


class ImageEqualize(nn.Module):
    """Per-image histogram equalisation of 8-bit grey levels: each pixel becomes its mid-rank, the share of the
    image's pixels below its level plus half the share at it. Low light maps grey levels through an increasing
    curve (gain and gamma, docs/design.md, section 2), which keeps their order, so a dark face and its normal-light twin
    come out alike except for noise and the levels quantisation merged. Exported with Equal, ReduceMean,
    CumSum and MatMul, which every supported runtime runs; grayscale models only (it equalises the channel mean)."""

    levels = 256

    def __init__(self):
        super().__init__()
        self.register_buffer("level_values", torch.arange(self.levels, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        grey = torch.round(x.float().mean(dim=1).reshape(-1, h * w) * (self.levels - 1))
        if torch.onnx.is_in_onnx_export():
            onehot = (grey.unsqueeze(-1) == self.level_values).float()  # (N, pixels, levels)
            hist = onehot.mean(dim=1, keepdim=True)
            mid_rank = hist.cumsum(-1) - hist / 2
            out = (onehot @ mid_rank.transpose(1, 2)).squeeze(-1)
        else:  # the same numbers by scatter and gather: far faster in training, not in every runtime's op set
            index = grey.long()
            hist = torch.zeros(index.shape[0], self.levels, device=x.device).scatter_add_(
                1, index, torch.ones_like(grey)) / (h * w)
            out = (hist.cumsum(1) - hist / 2).gather(1, index)
        out = out.reshape(-1, 1, h, w).expand(-1, c, -1, -1).to(x.dtype)
        # Straight-through gradient: data-free calibration optimises pixels through the model, and the
        # equalisation (a step function of them) has none; it is increasing, so the identity points the right way.
        return out + (x - x.detach()) if x.requires_grad else out


def image_input(equalize: bool) -> list[nn.Module]:
    """The layers every image-taking sub-graph starts with."""
    return ([ImageEqualize()] if equalize else []) + [ImageStandardize()]


def conv_bn_act(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = conv_bn_act(ch, ch)
        self.conv2 = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class ConvEncoder(nn.Module):
    """Small strided CNN -> global pool -> vector. The LA-CLIP image encoder and the condition encoder."""

    def __init__(self, in_chans: int, channels: tuple[int, ...], out_dim: int, equalize: bool = False,
                 convs_per_stage: int = 2):
        super().__init__()
        layers, cin = image_input(equalize), in_chans
        for ch in channels:
            layers += [conv_bn_act(cin, ch, stride=2)] + [conv_bn_act(ch, ch) for _ in range(convs_per_stage - 1)]
            cin = ch
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(cin, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x).mean(dim=(2, 3)))


class Attention(nn.Module):
    """Multi-head self-attention over a fixed number of tokens. The reshapes use that number and -1 for the
    batch, so the export holds constant shapes instead of Shape/Gather/Concat chains per reshape: at 36
    tokens those small ops cost as much as the matmuls. q, k and v are split off a 4-D (batch, 3 x heads,
    tokens, head_dim) tensor, which needs no Squeeze after the Split (unbind of a 5-D one exports three)."""

    def __init__(self, dim: int, heads: int, tokens: int):
        super().__init__()
        self.heads, self.dim, self.tokens = heads, dim, tokens
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head_dim = self.dim // self.heads
        qkv = self.qkv(x).reshape(-1, self.tokens, 3 * self.heads, head_dim).transpose(1, 2)
        q, k, v = qkv.split(self.heads, dim=1)
        attn = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(head_dim))
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(-1, self.tokens, self.dim))


class PriorBlock(nn.Module):
    """Transformer block; the EPD gives a per-channel scale and shift after each LayerNorm (DiffIR style)."""

    def __init__(self, dim: int, heads: int, tokens: int, mlp_ratio: float, epd_dim: int | None, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=epd_dim is None)
        self.attn = Attention(dim, heads, tokens)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=epd_dim is None)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.modulation = nn.Linear(epd_dim, 4 * dim) if epd_dim else None
        if self.modulation is not None:  # start as the identity modulation
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, epd: torch.Tensor | None) -> torch.Tensor:
        h1, h2 = self.norm1(x), None
        if self.modulation is not None:
            # split with a fixed size, not chunk: chunk exports as Shape/Gather/Div/Mul/Slice per piece.
            s1, b1, s2, b2 = self.modulation(epd).unsqueeze(1).split(self.attn.dim, dim=-1)
            h1 = h1 * (1 + s1) + b1
        x = x + self.attn(h1)
        h2 = self.norm2(x)
        if self.modulation is not None:
            h2 = h2 * (1 + s2) + b2
        return x + self.mlp(h2)


class FiLM(nn.Module):
    """A per-channel scale and shift of a feature map, made from the EPD by one linear layer that starts at zero:
    until training moves it, the adapter is the identity and the network computes what its image branch does."""

    def __init__(self, epd_dim: int, channels: int):
        super().__init__()
        self.channels = channels
        self.proj = nn.Linear(epd_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, epd: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(epd)[:, :, None, None].split(self.channels, dim=1)
        return x * (1 + scale) + shift


class LLformer(nn.Module):
    """Conv stem (BatchNorm, residual stages) -> 2x2 patch embedding -> EPD-conditioned blocks -> head. With
    `stage_adapters` and the prior, a FiLM adapter follows every stem stage and the patch embedding."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers, cin = image_input(cfg.equalize), cfg.in_chans
        self.stage_ends = []  # the index in `stem` of each stage's last layer: where its adapter applies
        for i, (ch, n_blocks) in enumerate(zip(cfg.stem_channels, cfg.stem_blocks, strict=True)):
            layers.append(conv_bn_act(cin, ch, stride=1 if i == 0 else 2))
            layers += [ResBlock(ch) for _ in range(n_blocks)]
            self.stage_ends.append(len(layers) - 1)
            cin = ch
        self.stem = nn.Sequential(*layers)
        self.patch = nn.Conv2d(cin, cfg.embed_dim, kernel_size=2, stride=2)
        film = cfg.prior and cfg.stage_adapters
        self.adapters = nn.ModuleList(
            FiLM(cfg.epd_dim, ch) for ch in (*cfg.stem_channels, cfg.embed_dim)) if film else None
        grid = cfg.input_size // (2 ** len(cfg.stem_channels))
        self.tokens, self.embed_dim = grid * grid, cfg.embed_dim
        self.pos = nn.Parameter(torch.zeros(1, self.tokens, cfg.embed_dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        epd_dim = cfg.epd_dim if cfg.prior else None
        self.blocks = nn.ModuleList(
            PriorBlock(cfg.embed_dim, cfg.heads, self.tokens, cfg.mlp_ratio, epd_dim, cfg.dropout)
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.embed_dim, len(cfg.classes))

    def forward(self, image: torch.Tensor, epd: torch.Tensor | None = None) -> torch.Tensor:
        # Channels-last before the reshape: ONNX Runtime's int8 convs run NHWC, so the transpose it adds after
        # the last conv and this one cancel (channels-first tokens would cost two layout transposes).
        if self.adapters is None:
            x = self.patch(self.stem(image))
        else:
            x, stage = image, 0
            for i, layer in enumerate(self.stem):
                x = layer(x)
                if i == self.stage_ends[stage]:
                    x, stage = self.adapters[stage](x, epd), stage + 1
            x = self.adapters[-1](self.patch(x), epd)
        x = x.permute(0, 2, 3, 1).reshape(-1, self.tokens, self.embed_dim) + self.pos
        for block in self.blocks:
            x = block(x, epd)
        return self.head(self.drop(self.norm(x).mean(dim=1)))


class PNet(nn.Module):
    """Prior network: LA-CLIP image and label embeddings -> the EPD (layer-normalised, no affine)."""

    def __init__(self, clip_dim: int, epd_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * clip_dim, 2 * epd_dim), nn.GELU(), nn.Linear(2 * epd_dim, epd_dim),
            nn.LayerNorm(epd_dim, elementwise_affine=False),
        )

    def forward(self, image_emb: torch.Tensor, label_emb: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image_emb, label_emb], dim=-1))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Denoiser(nn.Module):
    """MLP over the EPD with a time input; predicts the clean EPD directly (x0-parameterisation)."""

    time_dim = 32

    def __init__(self, epd_dim: int, cond_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(epd_dim + cond_dim + self.time_dim, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, epd_dim),
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        temb = timestep_embedding(t, self.time_dim).expand(x_t.shape[0], -1)
        return self.net(torch.cat([x_t, cond, temb], dim=-1))


def condition_encoder(cfg: ModelConfig) -> ConvEncoder:
    """The sampler's condition encoder (dark face -> condition), newly initialised."""
    return ConvEncoder(cfg.in_chans, cfg.cond_widths, cfg.cond_dim, cfg.equalize, cfg.cond_convs)


class LLDif(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.equalize and not cfg.grayscale:  # ImageEqualize works on the channel mean: colour would be lost
            raise LldifError("equalize needs a grayscale model (ModelConfig.grayscale); this one is in colour")
        self.cfg = cfg
        self.llformer = LLformer(cfg)
        if not cfg.prior:
            return
        n_cls = len(cfg.classes)
        self.clip_image = ConvEncoder(cfg.in_chans, cfg.encoder_channels, cfg.clip_dim, cfg.equalize)
        self.label_embed = nn.Parameter(torch.randn(n_cls, cfg.clip_dim) * 0.02)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.pnet = PNet(cfg.clip_dim, cfg.epd_dim)
        self.cond_encoder = condition_encoder(cfg)
        self.denoiser = Denoiser(cfg.epd_dim, cfg.cond_dim, cfg.denoiser_hidden)
        gen = torch.Generator().manual_seed(cfg.noise_seed)
        # The fixed start noise of the sampler: stored with the weights, so every backend agrees.
        self.register_buffer("start_noise", torch.randn(1, cfg.epd_dim, generator=gen))
        self.register_buffer(
            "alphas_cumprod", linear_alphas_cumprod(cfg.timesteps, cfg.beta_start, cfg.beta_end)
        )

    # --- stage 1: LA-CLIP and PNET (labels known) ---
    def clip_logits(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embedding and its temperature-scaled cosine similarity to every label embedding."""
        img = F.normalize(self.clip_image(image), dim=-1)
        lab = F.normalize(self.label_embed, dim=-1)
        return img, self.logit_scale.exp().clamp(max=100) * img @ lab.t()

    def teacher_epd(
        self, image: torch.Tensor, labels: torch.Tensor | None, label_dropout: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The EPD from image + label. Dropped (or absent) labels are replaced by the label embedding that
        LA-CLIP expects from the image alone, so the LLformer cannot simply read the answer off the EPD."""
        img, logits = self.clip_logits(image)
        lab = F.normalize(self.label_embed, dim=-1)
        guessed = logits.detach().softmax(-1) @ lab
        if labels is None:
            label_emb = guessed
        else:
            label_emb = lab[labels]
            if label_dropout > 0:
                drop = torch.rand(len(labels), 1, device=image.device) < label_dropout
                label_emb = torch.where(drop, guessed, label_emb)
        return self.pnet(img, label_emb), logits

    # --- stage 2 and inference: condition encoder + diffusion sampler ---
    def sampler_timesteps(self, steps: int | None = None) -> list[int]:
        return ddim_timesteps(self.cfg.timesteps, steps or self.cfg.sample_steps)

    def sample_epd(self, image: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        cond = self.cond_encoder(image)
        return ddim_sample(self.denoiser, cond, self.start_noise, self.sampler_timesteps(steps), self.alphas_cumprod)

    def forward(self, image: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Inference: logits from the image alone."""
        if not self.cfg.prior:
            return self.llformer(image)
        return self.llformer(image, self.sample_epd(image, steps))


def build_model(cfg: ModelConfig) -> LLDif:
    return LLDif(cfg)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def inference_parameters(model: LLDif) -> int:
    """Parameters used at test time (LA-CLIP and PNET are training-only)."""
    parts = [model.llformer] + ([model.cond_encoder, model.denoiser] if model.cfg.prior else [])
    return sum(count_parameters(p) for p in parts)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; afterwards every submodule is back in its own mode. Not model.train(was): a
    training phase keeps its frozen parts in eval mode, and validation must not leave the model in eval mode (every
    epoch after the first would train with BatchNorm frozen and no dropout)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def count_macs(model: LLDif, steps: int | None = None) -> int:
    """Multiply-accumulates of one inference on one face (conv, linear and attention matmuls), the sampler taking
    `steps` steps (None: the checkpoint's K)."""
    cfg = model.cfg
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        nonlocal total
        total += out.numel() // out.shape[0] * m.in_features

    def attn_hook(m, inp, out):
        nonlocal total
        n, c = inp[0].shape[1], inp[0].shape[2]
        total += 2 * n * n * c  # q@k^T and attn@v

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, Attention):
            hooks.append(m.register_forward_hook(attn_hook))
    with eval_mode(model):
        model(torch.zeros(1, cfg.in_chans, cfg.input_size, cfg.input_size), steps)
    for h in hooks:
        h.remove()
    return total
