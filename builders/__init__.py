"""bft.builders: packaging `bft generate` outputs as `datasets` configs and Hub releases (not built yet)."""
