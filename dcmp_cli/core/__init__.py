"""Device and precision choice, checkpoints, tiled inference and the shared predictors."""
