"""What every family's processor shares: the per-prompt cache, the batch call, right-padded collation.

A family's processor subclasses ``PromptProcessor`` and gives its prompt (``prompt``), where things sit
in it (``layout``), and its image path (``host_frames``, ``resize_frames``): the ``api.Processor`` methods.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from ...api import ModelInputs, TokenFacts, TokenLayout
from .tokens import right_pad


def square_grid_facts(family: str, image_token_id: int, pad_token_id: int, tokens_per_image: int, image_size: int):
    """A family's ``TokenFacts`` when each square frame is a square grid of image tokens."""
    grid = int(round(tokens_per_image**0.5))
    return TokenFacts(family, image_token_id, pad_token_id, tokens_per_image, (grid, grid), image_size)


class PromptProcessor:
    def __init__(self, config, tokenizer, facts: TokenFacts):
        self.config, self.tokenizer, self.facts = config, tokenizer, facts
        self._encode_cached = lru_cache(maxsize=64)(self._encode)

    def prompt(self, num_images: int, instruction: str) -> str:
        raise NotImplementedError

    def layout(self, ids: Sequence[int], num_images: int) -> TokenLayout:
        raise NotImplementedError

    def host_frames(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        raise NotImplementedError

    def resize_frames(self, frames: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> torch.Tensor:
        raise NotImplementedError

    def encode(self, num_images: int, instruction: str) -> tuple[tuple[int, ...], TokenLayout]:
        """Token ids and layout of one sample's prompt (cached: a robot repeats its instruction)."""
        return self._encode_cached(num_images, instruction)

    def _encode(self, num_images: int, instruction: str) -> tuple[tuple[int, ...], TokenLayout]:
        ids = self.tokenizer.encode(self.prompt(num_images, instruction))
        return tuple(ids), self.layout(ids, num_images)

    def preprocess_images(self, images: Sequence[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
        """Camera images (any size) -> (N, 3, S, S) uint8 on ``device``."""
        return self.resize_frames(self.host_frames(images), device)

    def __call__(self, frame_sets, device: torch.device | str = "cpu") -> ModelInputs:
        """A batch of (camera images, instruction) -> padded model inputs on ``device``."""
        if not frame_sets:
            raise ValueError("empty batch: expected at least one frame set")
        encoded = [self.encode(len(images), instruction) for images, instruction in frame_sets]
        images = self.preprocess_images([img for images, _ in frame_sets for img in images], device)
        return self.collate(encoded, images, device)

    def collate(self, encoded, images: torch.Tensor, device: torch.device | str = "cpu") -> ModelInputs:
        """Pad encoded prompts on the right and pair them with preprocessed uint8 images."""
        return right_pad(encoded, images, self.facts.pad_token_id, device)
