"""The prospectivity networks: a fusion layer + vision-Transformer masked autoencoder for stacked
geoscience grids, and the convolutional-autoencoder baseline.

Input windows are (B, C + 1, W, W): the C stack channels (NaN filled with 0) and the
validity mask. The fusion layer mixes sources per pixel (1x1) and then in a 3x3
neighbourhood (depthwise 3x3 + 1x1, residual). The ViT cuts the fused window into
P x P patches; masked patches are zeroed *before* fusion so nothing of them leaks
into visible tokens. The decoder predicts the C input channels of every patch; the
loss counts masked, valid pixels only.

Masks are drawn on groups of 2x2 patches (8x8 cells for P = 4) so a masked area is
wider than a deposit footprint's core and must be predicted from its surroundings.
"""

from __future__ import annotations

import torch
from torch import nn


class FusionLayer(nn.Module):
    """Per-pixel source mixing (1x1 conv) then small-kernel mixing (3x3 depthwise + 1x1), residual."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.pointwise = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.GELU())
        self.local = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 3, padding=1, groups=out_ch), nn.Conv2d(out_ch, out_ch, 1), nn.GELU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(x)
        return y + self.local(y)


def sincos_2d(n: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding for an n x n token grid: (n*n, dim)."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    parts = []
    for coord in (ys.flatten(), xs.flatten()):
        ang = coord[:, None] * omega[None]
        parts += [torch.sin(ang), torch.cos(ang)]
    emb = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(emb, (0, dim - emb.shape[1]))


def _encoder(dim: int, depth: int, heads: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        dim, heads, dim * 2, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class ProspectMAE(nn.Module):
    """Masked autoencoder: FusionLayer -> patch embedding -> Transformer encoder -> light decoder."""

    dec_pos: torch.Tensor

    def __init__(
        self,
        channels: int,
        window: int = 32,
        patch: int = 4,
        fused: int = 32,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        decoder_dim: int = 64,
        decoder_depth: int = 2,
        mask_ratio: float = 0.5,
        group: int = 2,
    ):
        super().__init__()
        if window % (patch * group):
            raise ValueError(f"window {window} must be a multiple of patch*group = {patch * group}")
        self.config = dict(
            channels=channels,
            window=window,
            patch=patch,
            fused=fused,
            dim=dim,
            depth=depth,
            heads=heads,
            decoder_dim=decoder_dim,
            decoder_depth=decoder_depth,
            mask_ratio=mask_ratio,
            group=group,
        )
        self.channels, self.window, self.patch, self.group, self.mask_ratio = channels, window, patch, group, mask_ratio
        self.grid = window // patch
        self.fusion = FusionLayer(channels + 1, fused)
        self.embed = nn.Conv2d(fused, dim, patch, stride=patch)
        self.register_buffer("pos", sincos_2d(self.grid, dim)[None], persistent=False)
        self.register_buffer("dec_pos", sincos_2d(self.grid, decoder_dim)[None], persistent=False)
        self.encoder = _encoder(dim, depth, heads)
        self.norm = nn.LayerNorm(dim)
        self.to_decoder = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder = _encoder(decoder_dim, decoder_depth, heads)
        self.head = nn.Linear(decoder_dim, patch * patch * channels)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def tokens(self) -> int:
        return self.grid * self.grid

    def random_mask(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> torch.Tensor:
        """(B, tokens) bool, True = masked; whole groups of ``group x group`` patches."""
        g = self.grid // self.group
        n_mask = int(round(self.mask_ratio * g * g))
        noise = torch.rand(batch, g * g, generator=generator)
        ranks = noise.argsort(dim=1).argsort(dim=1)
        coarse = (ranks < n_mask).reshape(batch, 1, g, g).float()
        fine = nn.functional.interpolate(coarse, scale_factor=self.group, mode="nearest")
        return fine.reshape(batch, -1).bool().to(device or "cpu")

    def scoring_masks(self) -> torch.Tensor:
        """Two complementary checkerboard masks over groups: every patch is masked exactly once."""
        g = self.grid // self.group
        yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
        board = ((yy + xx) % 2).float()[None, None]
        fine = nn.functional.interpolate(board, scale_factor=self.group, mode="nearest").reshape(-1).bool()
        return torch.stack([fine, ~fine])

    def _pixel_mask(self, token_mask: torch.Tensor) -> torch.Tensor:
        m = token_mask.reshape(-1, 1, self.grid, self.grid).float()
        return nn.functional.interpolate(m, scale_factor=self.patch, mode="nearest")

    def encode(self, x: torch.Tensor, valid: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token latents (B, tokens, dim); masked tokens are dropped when ``token_mask`` is given."""
        inp = torch.cat([x, valid[:, None]], dim=1)
        if token_mask is not None:
            inp = inp * (1 - self._pixel_mask(token_mask))
        tok = self.embed(self.fusion(inp)).flatten(2).transpose(1, 2) + self.pos
        if token_mask is not None:
            keep = (~token_mask).sum(dim=1)
            if not torch.all(keep == keep[0]):
                raise ValueError("every sample must keep the same number of tokens")
            tok = tok[~token_mask].reshape(tok.shape[0], int(keep[0]), -1)
        return self.norm(self.encoder(tok))

    def forward(self, x: torch.Tensor, valid: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """Predicted pixels (B, C, W, W) given the visible tokens."""
        b = x.shape[0]
        lat = self.to_decoder(self.encode(x, valid, token_mask))
        full = self.mask_token.expand(b, self.tokens, -1).clone()
        full[~token_mask] = lat.reshape(-1, lat.shape[-1])
        out = self.head(self.decoder(full + self.dec_pos))
        p, c, g = self.patch, self.channels, self.grid
        return out.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)

    def loss_weight(self, valid: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """(B, W, W): the valid cells of masked tokens, where the reconstruction is scored."""
        return self._pixel_mask(token_mask)[:, 0] * valid

    def loss(self, x: torch.Tensor, valid: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(self.forward(x, valid, token_mask), x, self.loss_weight(valid, token_mask))


class ConvAutoencoder(nn.Module):
    """Baseline: a small convolutional autoencoder (two stride-2 stages, 4x bottleneck)."""

    def __init__(self, channels: int, width: int = 32, window: int = 32):
        super().__init__()
        self.config = dict(channels=channels, width=width, window=window)
        self.channels, self.window = channels, window
        self.enc = nn.Sequential(
            nn.Conv2d(channels + 1, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 8, 1),
        )
        self.dec = nn.Sequential(
            nn.Conv2d(8, width, 1),
            nn.GELU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.GELU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(torch.cat([x, valid[:, None]], dim=1)))

    def loss(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return reconstruction_loss(self.forward(x, valid), x, valid)


def reconstruction_loss(pred: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the squared error of ``pred`` (B, C, W, W), averaged with ``weight`` (B, W, W)."""
    err = ((pred - x) ** 2).mean(dim=1)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)
