"""The torch reference measured like a package, for `bench` ratios and `eval` comparisons."""

from __future__ import annotations

import numpy as np
import torch

from lldif_edge.bench import measure_latency, measure_throughput
from lldif_edge.lldif.checkpoint import load_checkpoint
from lldif_edge.lldif.diffusion import ddim_sample


def bench_reference(model_path, faces: np.ndarray, steps: int | None, batch: int, threads: int | None,
                    warmup: int = 10, runs: int = 100, seconds: float = 2.0) -> dict:
    """Latency per stage (cond, denoiser with `steps` steps, llformer) and throughput of the torch model."""
    if threads:
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(model_path)
    steps = steps or model.cfg.sample_steps
    c = model.cfg
    x = torch.from_numpy(np.asarray(faces)).float().div(255)
    x = x.reshape(len(faces), -1, c.input_size, c.input_size).expand(-1, c.in_chans, -1, -1).contiguous()
    ts = model.sampler_timesteps(steps)

    @torch.inference_mode()
    def run(image: torch.Tensor, timings: dict | None = None) -> torch.Tensor:
        import time

        marks = [time.perf_counter()]
        if not c.prior:
            out = model.llformer(image)
            marks.append(time.perf_counter())
            names = ["llformer"]
        else:
            cond = model.cond_encoder(image)
            marks.append(time.perf_counter())
            epd = ddim_sample(model.denoiser, cond, model.start_noise, ts, model.alphas_cumprod)
            marks.append(time.perf_counter())
            out = model.llformer(image, epd)
            marks.append(time.perf_counter())
            names = ["cond", "denoiser", "llformer"]
        if timings is not None:
            for n, a, b in zip(names, marks, marks[1:], strict=False):
                timings[n] = timings.get(n, 0.0) + (b - a) * 1e3
        return out

    xb = x[np.arange(batch) % len(x)]
    latency = measure_latency(lambda t: run(x[:1], t), warmup, runs)
    throughput = measure_throughput(lambda: run(xb), batch, seconds)
    return {"latency_ms": latency, "throughput_fps": throughput, "batch": batch,
            "describe": f"torch {torch.__version__} FP32, {steps}-step sampler, {torch.get_num_threads()} threads"}


@torch.inference_mode()
def reference_logits(model_path, images_u8: np.ndarray, steps: int | None = None) -> np.ndarray:
    from lldif_edge.lldif.train import predict_logits

    model, _ = load_checkpoint(model_path)
    if steps:
        model.cfg.sample_steps = steps
    return predict_logits(model, images_u8)
