"""The torch reference: a bench runner like a package's `Pipeline`, and the logits `eval --compare` checks."""

from __future__ import annotations

import time

import numpy as np
import torch

from lldif_edge.lldif.checkpoint import load_checkpoint
from lldif_edge.lldif.diffusion import ddim_sample


class TorchReference:
    """The torch checkpoint as a bench runner, like a `Pipeline`: `preprocess`, `logits(x, timings)` with ms per
    stage (cond, denoiser with `steps` sampler steps, llformer), `describe`. `bench` times it in turn with the
    packages; its S-step sampler is what their K-step one was distilled from."""

    def __init__(self, model_path, steps: int | None = None, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.model, _ = load_checkpoint(model_path)
        self.steps = steps or self.model.cfg.sample_steps
        self.timesteps = self.model.sampler_timesteps(self.steps)
        self.stages = []  # no sub-graph files: nothing for `bench --profile`

    def preprocess(self, faces: np.ndarray) -> np.ndarray:
        c = self.model.cfg
        x = np.asarray(faces, np.float32).reshape(len(faces), -1, c.input_size, c.input_size) / 255
        return np.ascontiguousarray(np.broadcast_to(x, (len(faces), c.in_chans, c.input_size, c.input_size)))

    @torch.inference_mode()
    def logits(self, x: np.ndarray, timings: dict | None = None) -> np.ndarray:
        m, image = self.model, torch.from_numpy(x)
        marks = [time.perf_counter()]
        if not m.cfg.prior:
            out = m.llformer(image)
            marks.append(time.perf_counter())
            names = ["llformer"]
        else:
            cond = m.cond_encoder(image)
            marks.append(time.perf_counter())
            epd = ddim_sample(m.denoiser, cond, m.start_noise, self.timesteps, m.alphas_cumprod)
            marks.append(time.perf_counter())
            out = m.llformer(image, epd)
            marks.append(time.perf_counter())
            names = ["cond", "denoiser", "llformer"]
        if timings is not None:
            for n, a, b in zip(names, marks, marks[1:], strict=False):
                timings[n] = timings.get(n, 0.0) + (b - a) * 1e3
        return out.numpy()

    def describe(self) -> str:
        return f"torch {torch.__version__} FP32, {self.steps}-step sampler, {torch.get_num_threads()} threads"


@torch.inference_mode()
def reference_logits(model_path, images_u8: np.ndarray, steps: int | None = None) -> np.ndarray:
    from lldif_edge.lldif.train import predict_logits

    model, _ = load_checkpoint(model_path)
    return predict_logits(model, images_u8, steps=steps)
