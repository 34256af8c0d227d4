"""The SAGE student: a small transformer that predicts GR00T's per-token features from the same inputs.

Same processor output as the teacher (its frames, prompt ids and token layout, as the teacher family's
recorded token facts describe them):

    frames (N, 3, S, S) -> Conv P x P / P -> (N, T, W)    one token per teacher image token (S / P = grid)
    prompt ids (B, L) -> remapped to the data's vocabulary -> Embedding -> (B, L, W)
    image tokens written into the image-token positions (the recorded image_token_id), + learned positions
    -> causal pre-LN transformer (as the teacher's LLM: a token sees only what precedes it)
    -> LayerNorm -> Linear(W, teacher width): standardised teacher features (B, L, D)

The vocabulary is the set of ids the training data uses (stored in the checkpoint), not a 151k-row table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..families.common.tokens import scatter_image_embeddings
from .config import StudentConfig


class StudentBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor, weights: bool = False):
        """(B, L, W) -> (B, L, W); with ``weights``, also the attention weights averaged over heads (B, L, L),
        computed explicitly (SDPA does not return them) for ``distill --attention-weight``."""
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, H, L, d)
        if weights:
            scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5  # (B, H, L, L)
            causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            probabilities = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            attended = probabilities.to(v.dtype) @ v  # (B, H, L, d)
        else:
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # right padding needs no mask
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        x = x + self.mlp(self.norm2(x))
        return (x, probabilities.mean(dim=1)) if weights else x


class SageStudent(nn.Module):
    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.width
        self.image_token_id = cfg.facts.image_token_id
        self.register_buffer("vocab", torch.tensor(sorted(cfg.vocab), dtype=torch.int64))  # (V,) teacher ids
        self.patch_embed = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embed = nn.Embedding(len(cfg.vocab) + 1, width)  # last row: ids outside the vocabulary
        self.pos_embed = nn.Embedding(cfg.max_len, width)
        self.blocks = nn.ModuleList([StudentBlock(width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, cfg.teacher_dim)
        self.register_buffer("feature_mean", torch.zeros(cfg.teacher_dim))  # teacher statistics (train split)
        self.register_buffer("feature_std", torch.ones(cfg.teacher_dim))

    def remap(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Teacher token ids -> rows of ``text_embed``; unknown ids -> the last row."""
        position = torch.searchsorted(self.vocab, input_ids).clamp(max=len(self.vocab) - 1)
        known = self.vocab[position] == input_ids
        return torch.where(known, position, torch.full_like(position, len(self.vocab)))

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor, attention: bool = False):
        """(B, L) ids, (N, 3, S, S) normalised frames -> standardised features (B, L, D); with ``attention``,
        also the last block's attention weights averaged over heads (B, L, L)."""
        if input_ids.shape[1] > self.cfg.max_len:
            raise ValueError(
                f"sequence of {input_ids.shape[1]} tokens exceeds the student's max_len {self.cfg.max_len}"
            )
        x = self.text_embed(self.remap(input_ids))  # (B, L, W)
        patches = self.patch_embed(pixel_values.to(x.dtype)).flatten(2).transpose(1, 2)  # (N, T, W)
        x = scatter_image_embeddings(x, patches, input_ids == self.image_token_id)
        x = x + self.pos_embed.weight[: input_ids.shape[1]].unsqueeze(0)
        for block in self.blocks[:-1]:
            x = block(x)
        if attention:
            x, weights = self.blocks[-1](x, weights=True)
            return self.head(self.norm(x)), weights
        return self.head(self.norm(self.blocks[-1](x)))

    def features(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Predictions in the teacher's units (un-standardised): what the node publishes."""
        return self(input_ids, pixel_values) * self.feature_std + self.feature_mean
