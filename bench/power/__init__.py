"""Power samplers, one per source, behind power.base.Sampler."""
