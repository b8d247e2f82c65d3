"""The acoustic model: log-mel frames -> per-frame character log-probabilities (CTC).

Two strided 2-D convolutions (time x frequency) shorten and summarise the frames, a
stack of bidirectional GRUs reads the utterance, and a linear CTC head scores the
characters of ``ALPHABET`` plus the CTC blank (index 0) for each output frame.
Padded frames never influence real ones: every convolution output is masked to the
utterance length, and the backward GRU of each layer reads every utterance reversed
within its own length (padding stays at the end, after the real frames), so a batch
gives the same outputs as its items one by one. (Unpacked GRUs train several times
faster on CPU than packed ones.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

ALPHABET = " abcdefghijklmnopqrstuvwxyz"
BLANK = 0


def encode_text(text: str) -> list[int]:
    """Token ids of ``text`` (lowercase letters and spaces; anything else is refused)."""
    try:
        return [ALPHABET.index(ch) + 1 for ch in text]
    except ValueError:
        raise ValueError(f"text has characters outside the alphabet: {text!r}") from None


def decode_tokens(tokens: list[int]) -> str:
    """The text of token ids (blank ids are skipped)."""
    return "".join(ALPHABET[t - 1] for t in tokens if t != BLANK)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the network; stored next to the weights as JSON."""

    n_mels: int = 80
    conv_channels: int = 32
    time_strides: tuple[int, int] = (3, 1)
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.15

    @property
    def n_tokens(self) -> int:
        return len(ALPHABET) + 1

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> ModelConfig:
        return cls(**{**doc, "time_strides": tuple(doc["time_strides"])})  # type: ignore[arg-type]


class CtcRecognizer(nn.Module):
    """Conv front end + bidirectional GRUs + CTC head over characters."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.conv_channels
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(1, c, 3, stride=(config.time_strides[0], 2), padding=1),
                nn.Conv2d(c, c, 3, stride=(config.time_strides[1], 2), padding=1),
            ]
        )
        self.norms = nn.ModuleList([nn.BatchNorm2d(c), nn.BatchNorm2d(c)])
        freq = config.n_mels
        for _ in self.convs:
            freq = (freq + 1) // 2
        self.project = nn.Linear(c * freq, config.hidden)
        self.forward_rnns = nn.ModuleList(
            nn.GRU(config.hidden if i == 0 else 2 * config.hidden, config.hidden, batch_first=True)
            for i in range(config.layers)
        )
        self.backward_rnns = nn.ModuleList(
            nn.GRU(config.hidden if i == 0 else 2 * config.hidden, config.hidden, batch_first=True)
            for i in range(config.layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden, config.n_tokens)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output frames for input frame counts ``lengths`` (each stride ceil-divides)."""
        for stride in self.config.time_strides:
            lengths = torch.div(lengths + stride - 1, stride, rounding_mode="floor")
        return lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` (batch, frames, n_mels) zero-padded, ``lengths`` (batch,) on CPU.

        Returns CTC log-probabilities (batch, out_frames, n_tokens) and the output
        lengths (batch,), a CPU int64 tensor.
        """
        out_lengths = lengths.cpu().long()
        steps = torch.arange(features.shape[1], device=features.device)
        valid = steps[None, :] < out_lengths.to(features.device)[:, None]
        x = (features * valid[:, :, None].to(features.dtype)).unsqueeze(1)  # (B, 1, T, F)
        for conv, norm, stride in zip(self.convs, self.norms, self.config.time_strides, strict=True):
            x = torch.relu(norm(conv(x)))
            out_lengths = torch.div(out_lengths + stride - 1, stride, rounding_mode="floor")
            steps = torch.arange(x.shape[2], device=x.device)
            mask = steps[None, :] < out_lengths.to(x.device)[:, None]
            x = x * mask[:, None, :, None].to(x.dtype)
        b, c, t, f = x.shape
        x = self.dropout(torch.relu(self.project(x.permute(0, 2, 1, 3).reshape(b, t, c * f))))
        reverse = _reverse_index(out_lengths, t).to(x.device)[:, :, None].expand(-1, -1, x.shape[2])
        for i, (fwd, bwd) in enumerate(zip(self.forward_rnns, self.backward_rnns, strict=True)):
            if i > 0:
                x = self.dropout(x)
                reverse = reverse[:, :, :1].expand(-1, -1, x.shape[2])
            ahead, _ = fwd(x)
            behind, _ = bwd(torch.gather(x, 1, reverse))
            x = torch.cat([ahead, torch.gather(behind, 1, reverse[:, :, : behind.shape[2]])], dim=2)
        logits = self.head(self.dropout(x))
        return torch.log_softmax(logits.float(), dim=-1), out_lengths


def _reverse_index(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """Time indices (batch, total) reversing each row within its length; padding stays put."""
    steps = torch.arange(total)[None, :]
    return torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)


def pad_features(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (frames, n_mels) tensors into a zero-padded batch and their lengths."""
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
    batch = torch.zeros(len(features), int(lengths.max()), features[0].shape[1])
    for i, f in enumerate(features):
        batch[i, : f.shape[0]] = f
    return batch, lengths
