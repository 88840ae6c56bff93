"""The TESSERA model in PyTorch: two transformer backbones, GRU-attention pooling, fusion.

Forward pass (``reference/encoder-spec.md`` section 3), per backbone, for an input of shape
(B, T, C + 1) whose last column is the raw day of year (float, 1..366):

1. band embedding ``Linear(C -> D) -> ReLU -> Linear(D -> D)``;
2. plus a fixed, interleaved sin/cos encoding of the raw DOY (float32, no scaling);
3. ``n_layers`` post-norm ``nn.TransformerEncoderLayer`` (ReLU FFN, no masks);
4. :class:`TemporalAwarePooling`: a hand-written GRU (not ``nn.GRU``) runs over the
   transformer outputs; LayerNorm + Linear(D -> 1) of its states, softmaxed over time,
   weight the *transformer outputs*: (B, D).

The S2 and S1 pooled vectors are concatenated (S2 first) and reduced by ``dim_reducer`` to
``out_dim``; the first ``save_dim`` (128) dims are the embedding. Module and parameter names
mirror the official state-dict keys so official checkpoints load without renaming.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import EncoderConfig

__all__ = [
    "DoyEncoding",
    "ProjectionHead",
    "TemporalAwarePooling",
    "TesseraBackbone",
    "TesseraEncoder",
    "TesseraGRUCell",
    "doy_encoding",
]


def doy_encoding(doy: torch.Tensor, d_model: int) -> torch.Tensor:
    """(..., T) raw day of year -> (..., T, D) float32 interleaved sin/cos encoding.

    PE[..., 2i] = sin(doy * w_i), PE[..., 2i+1] = cos(doy * w_i), w_i = exp(-2i ln(10000) / D),
    computed in float32 exactly as the official code does: bit-identical where torch's
    float32 ``exp`` rounds the frequencies the same way (same CPU and build), otherwise
    within one ulp of a frequency.
    """
    doy = doy.float()
    omega = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device=doy.device) * (-math.log(10000.0) / d_model))
    angle = doy.unsqueeze(-1) * omega
    pe = torch.empty(*doy.shape, d_model, dtype=torch.float32, device=doy.device)
    pe[..., 0::2] = torch.sin(angle)
    pe[..., 1::2] = torch.cos(angle)
    return pe


class DoyEncoding(nn.Module):
    """Module form of :func:`doy_encoding` (no parameters; hookable)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model

    def forward(self, doy: torch.Tensor) -> torch.Tensor:
        return doy_encoding(doy, self.d_model)


class TesseraGRUCell(nn.Module):
    """TESSERA's custom GRU cell (one bias per gate, reset applied before W_hh, z weights the new state).

    r = sigmoid(W_ir x + W_hr h + b_r); z = sigmoid(W_iz x + W_hz h + b_z);
    n = tanh(W_ih x + W_hh (r * h) + b_h); h' = (1 - z) * h + z * n. Not mappable onto nn.GRU.
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.W_ir = nn.Linear(d, d, bias=False)
        self.W_iz = nn.Linear(d, d, bias=False)
        self.W_ih = nn.Linear(d, d, bias=False)
        self.W_hr = nn.Linear(d, d, bias=False)
        self.W_hz = nn.Linear(d, d, bias=False)
        self.W_hh = nn.Linear(d, d, bias=False)
        self.b_r = nn.Parameter(torch.zeros(d))
        self.b_z = nn.Parameter(torch.zeros(d))
        self.b_h = nn.Parameter(torch.zeros(d))

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) inputs -> (B, T, D) hidden states h_1..h_T, from h_0 = 0."""
        b, t, d = x.shape
        # Input projections of all steps at once (one matmul instead of 3T).
        w_in = torch.cat([self.W_ir.weight, self.W_iz.weight, self.W_ih.weight], dim=0)
        xi = torch.matmul(x, w_in.t())
        xr, xz, xn = xi[..., :d], xi[..., d : 2 * d], xi[..., 2 * d :]
        w_rz = torch.cat([self.W_hr.weight, self.W_hz.weight], dim=0).t()
        w_hh = self.W_hh.weight.t()
        h = x.new_zeros(b, d)
        out = []
        for k in range(t):
            g = torch.matmul(h, w_rz)
            r = torch.sigmoid(xr[:, k] + g[:, :d] + self.b_r)
            z = torch.sigmoid(xz[:, k] + g[:, d:] + self.b_z)
            n = torch.tanh(xn[:, k] + torch.matmul(r * h, w_hh) + self.b_h)
            h = (1 - z) * h + z * n
            out.append(h)
        return torch.stack(out, dim=1)


class _TemporalContext(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.gru_cell = TesseraGRUCell(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru_cell.run(x)


class TemporalAwarePooling(nn.Module):
    """GRU-context attention pooling over time: (B, T, D) -> (B, D).

    Scores = query(LayerNorm(GRU(x))) (B, T, 1), softmaxed over T, weight x itself.
    T = 1 returns x[:, 0]; T = 0 returns zeros.
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.temporal_context = _TemporalContext(d)
        self.query = nn.Linear(d, 1)
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], x.shape[2])
        if x.shape[1] == 1:
            return x[:, 0]
        ctx = self.temporal_context(x)
        scores = self.query(self.layer_norm(ctx))
        weights = torch.softmax(scores, dim=1)
        return (weights * x).sum(dim=1)


class TesseraBackbone(nn.Module):
    """One sensor branch: (B, T, C + 1) with DOY in the last column -> (B, D)."""

    def __init__(self, in_bands: int, d_model: int, n_heads: int, n_layers: int, dim_feedforward: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.in_bands = in_bands
        self.embedding = nn.Sequential(nn.Linear(in_bands, d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.pos_encoder = DoyEncoding(d_model)
        layer = nn.TransformerEncoderLayer(
            d_model=d_model,
            nhead=n_heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation="relu",
            batch_first=True,
        )
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=n_layers, enable_nested_tensor=False)
        self.attn_pool = TemporalAwarePooling(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x[..., : self.in_bands]
        doy = x[..., self.in_bands]
        h = self.embedding(bands) + self.pos_encoder(doy)
        h = self.transformer_encoder(h)
        return self.attn_pool(h)


class TesseraEncoder(nn.Module):
    """The full inference model: S2 + S1 backbones, concat fusion, ``dim_reducer``.

    ``forward(s2, s1)``: s2 (B, T2, 11) and s1 (B, T1, 3) float32 normalised inputs with
    the raw DOY last -> (B, out_dim) float32 representation. :meth:`embed` keeps the first
    ``save_dim`` dims (the 128-d embedding written to tiles).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.s2_backbone = TesseraBackbone(c.s2_bands, c.d_model, c.n_heads, c.n_layers, c.dim_feedforward, c.dropout)
        self.s1_backbone = TesseraBackbone(c.s1_bands, c.d_model, c.n_heads, c.n_layers, c.dim_feedforward, c.dropout)
        if c.reducer_hidden:
            self.dim_reducer = nn.Sequential(
                nn.Linear(2 * c.d_model, c.reducer_hidden),
                nn.LayerNorm(c.reducer_hidden),
                nn.ReLU(),
                nn.Dropout(c.reducer_dropout),
                nn.Linear(c.reducer_hidden, c.out_dim),
            )
        else:
            self.dim_reducer = nn.Sequential(nn.Linear(2 * c.d_model, c.out_dim))

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.s2_backbone(s2), self.s1_backbone(s1)], dim=-1)
        return self.dim_reducer(fused)

    def embed(self, s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        """(B, save_dim) embedding: the first ``save_dim`` dims of :meth:`forward`."""
        return self.forward(s2, s1)[:, : self.config.save_dim]


class ProjectionHead(nn.Module):
    """Barlow Twins projector (training only): [Linear, BatchNorm1d, ReLU] x n_hidden, Linear.

    Keys ``projector.net.{0,1,3,4,...}`` as in the official training checkpoints.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, n_hidden: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(n_hidden):
            layers += [nn.Linear(d, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
            d = hidden_dim
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
