"""Diffusion math: SDEs, score-matching loss, predictor-corrector sampling, guidance (no NNI)."""
