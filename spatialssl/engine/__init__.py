"""The engine: config, checks, the one loop, optimiser, checkpoints, run folders."""
