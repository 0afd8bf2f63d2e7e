"""Segmentation models, checkpoints and the blocked sliding-window predictor."""
