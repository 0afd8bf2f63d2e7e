"""Unsupervised mineral prospectivity from multi-source geoscience grids.

- ``synth``: synthetic regions with planted deposits (train / held-out) and decoys.
- ``transforms`` + ``stack``: align layers of any cell size, extent and no-data onto
  one grid, transform per layer kind, validity mask, zarr store.
- ``model``: fusion layer + ViT masked autoencoder; the conv-AE baseline.
- ``train``: window pool, torch loop, Ray Train ``TorchTrainer`` wrapper, checkpoints.
- ``baselines``: isolation forest and PCA reconstruction error per cell.
- ``score``: blocked sliding-window maps (zarr, GeoTIFF) and the prospectivity score.
- ``evaluate``: ROC AUC, success-rate curve, top-10 % capture, prediction-area plot.
"""
