"""Per-cell baselines fitted on a sample of valid cells: isolation forest and PCA
reconstruction error. (The third baseline, a small convolutional autoencoder, is
``model.ConvAutoencoder``, trained by ``train``.)"""

from __future__ import annotations

import numpy as np

from engine.prospect.score import channel_error
from engine.prospect.stack import Stack
from engine.prospect.train import WindowPool


def sample_cells(stack: Stack, n: int = 100_000, seed: int = 0, pool_blocks: int = 8) -> np.ndarray:
    """(n, C) feature vectors of random valid cells from the training pool blocks."""
    pool = WindowPool(stack, window=1, blocks=pool_blocks, seed=seed)
    rng = np.random.default_rng(seed)
    feats = np.concatenate([d[:, v > 0].T for d, v in zip(pool.data, pool.valid)])
    idx = rng.choice(len(feats), size=min(n, len(feats)), replace=False)
    return feats[idx]


class IsolationForestScorer:
    """Anomaly score = ``-score_samples`` of an isolation forest (higher = more anomalous).

    ``channels`` selects the features (default all); the job passes the measured
    channels, the same rule as the MAE's score (one-hot geology left out).
    """

    components: tuple[str, ...] = ("iforest",)

    def __init__(self, cells: np.ndarray, seed: int = 0, n_estimators: int = 200, channels: list[int] | None = None):
        from sklearn.ensemble import IsolationForest

        self.channels = list(channels) if channels is not None else list(range(cells.shape[1]))
        self.model = IsolationForest(n_estimators=n_estimators, max_samples=256, random_state=seed).fit(
            cells[:, self.channels]
        )

    def cells(self, x: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(x[:, self.channels])


class PCAScorer:
    """Squared reconstruction error from the leading components explaining ``variance`` of the data."""

    components: tuple[str, ...] = ("pca",)

    def __init__(self, cells: np.ndarray, variance: float = 0.9, channels: list[int] | None = None, drop_top: int = 0):
        from sklearn.decomposition import PCA

        self.drop_top = drop_top
        self.channels = list(channels) if channels is not None else list(range(cells.shape[1]))
        self.model = PCA(n_components=variance, svd_solver="full").fit(cells[:, self.channels])

    def cells(self, x: np.ndarray) -> np.ndarray:
        x = x[:, self.channels]
        rec = self.model.inverse_transform(self.model.transform(x))
        return channel_error((x - rec) ** 2, 1, self.drop_top)
