"""The reference LLDif model: config, modules, diffusion sampler, training. Needs torch (the [train] extra)."""
