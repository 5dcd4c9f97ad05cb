"""bft.training: fine-tune backward, seed and curated models with TRL (`bft train`), serve them (`bft serve`)."""
