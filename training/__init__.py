"""bft.training: fine-tuning backward, seed and curated models with TRL (not built yet)."""
