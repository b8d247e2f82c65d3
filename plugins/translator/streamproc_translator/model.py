"""The translation network: a GRU encoder-decoder with Luong (general) attention.

The encoder is a bidirectional GRU over source subwords; its final states, through a
``tanh`` bridge, start a one-layer GRU decoder. At each target step the decoder state
attends over the encoder outputs (bilinear "general" score, padding masked), and
``tanh(W [state; context])`` predicts the next subword through an output layer tied to
the target embedding. Without input feeding, teacher-forced training runs the decoder
over the whole target sequence in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from streamproc_translator.bpe import BOS_ID, EOS_ID, PAD_ID


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the network (stored in ``config.json`` next to the weights)."""

    src_vocab: int
    tgt_vocab: int
    embed_dim: int = 256
    hidden: int = 256
    dropout: float = 0.2


@dataclass(frozen=True)
class Memory:
    """Encoder outputs for a batch: values (B, S, 2H), keys (B, S, H), mask (B, S), state."""

    values: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor
    state: torch.Tensor


class Seq2SeqTranslator(nn.Module):
    """Encoder-decoder with attention; ids use the ``bpe`` specials (pad 0, bos 2, eos 3)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        e, h = config.embed_dim, config.hidden
        self.src_embed = nn.Embedding(config.src_vocab, e, padding_idx=PAD_ID)
        self.encoder = nn.GRU(e, h, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(2 * h, h)
        self.tgt_embed = nn.Embedding(config.tgt_vocab, e, padding_idx=PAD_ID)
        self.decoder = nn.GRU(e, h, batch_first=True)
        self.attn_key = nn.Linear(2 * h, h, bias=False)
        self.combine = nn.Linear(3 * h, e)
        self.output_bias = nn.Parameter(torch.zeros(config.tgt_vocab))
        self.dropout = nn.Dropout(config.dropout)
        # Unit-variance embeddings would make the tied output layer start with huge logits.
        for embedding in (self.src_embed, self.tgt_embed):
            nn.init.normal_(embedding.weight, std=e**-0.5)
            with torch.no_grad():
                embedding.weight[PAD_ID].zero_()

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> Memory:
        """Encode padded source ids (B, S) with their lengths (B,, on the CPU, all >= 1)."""
        x = self.dropout(self.src_embed(src))
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, last = self.encoder(packed)
        values, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        state = torch.tanh(self.bridge(torch.cat([last[0], last[1]], dim=-1))).unsqueeze(0)
        return Memory(values, self.attn_key(values), src != PAD_ID, state)

    def attend(self, states: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) and attention weights (B, T, S) for decoder states (B, T, H)."""
        scores = states @ memory.keys.transpose(1, 2)
        scores = scores.masked_fill(~memory.mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(memory.values.dtype)
        context = weights @ memory.values
        hidden = torch.tanh(self.combine(torch.cat([states, context], dim=-1)))
        logits = nn.functional.linear(self.dropout(hidden), self.tgt_embed.weight, self.output_bias)
        return logits, weights

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for target inputs ``tgt_in`` (starting with bos)."""
        memory = self.encode(src, lengths)
        states, _ = self.decoder(self.dropout(self.tgt_embed(tgt_in)), memory.state)
        logits, _ = self.attend(states, memory)
        return logits

    def greedy(
        self, src: torch.Tensor, lengths: torch.Tensor, max_lens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched greedy decoding; sentence ``i`` ends with eos by step ``max_lens[i]``.

        Returns ids (B, L) and, per step, the source position attended most (B, L).
        Positions after a sequence's eos hold pad; decoding stops when all emitted eos.
        """
        memory = self.encode(src, lengths)
        batch = src.size(0)
        token = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=src.device)
        state = memory.state
        done = torch.zeros(batch, dtype=torch.bool, device=src.device)
        ids, focus = [], []
        for step in range(int(max_lens.max())):
            out, state = self.decoder(self.tgt_embed(token), state)
            logits, weights = self.attend(out, memory)
            token = logits.argmax(dim=-1)
            token = token.masked_fill((step + 1 >= max_lens).unsqueeze(1), EOS_ID)
            token = token.masked_fill(done.unsqueeze(1), PAD_ID)
            ids.append(token)
            focus.append(weights.argmax(dim=-1))
            done = done | (token.squeeze(1) == EOS_ID)
            if bool(done.all()):
                break
        return torch.cat(ids, dim=1), torch.cat(focus, dim=1)

    def beam_search(
        self,
        src: torch.Tensor,
        lengths: torch.Tensor,
        max_lens: torch.Tensor,
        beam: int,
        alpha: float = 1.0,
        no_repeat_ngram: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched beam search with the length limits and outputs of ``greedy``.

        Each sentence keeps ``beam`` hypotheses; a finished one is only extended by pad at
        no cost. The winner maximises log-probability / length ** ``alpha``. Sentences
        are decoded independently of the others in the batch. With ``no_repeat_ngram``
        n > 0, a hypothesis may not emit a subword that would repeat one of its own
        n-grams (the repetition guard against loops such as "su hijo su hijo su hijo").
        """
        memory = self.encode(src, lengths)
        batch, vocab = src.size(0), self.output_bias.numel()
        memory = Memory(
            memory.values.repeat_interleave(beam, 0),
            memory.keys.repeat_interleave(beam, 0),
            memory.mask.repeat_interleave(beam, 0),
            memory.state.repeat_interleave(beam, 1),
        )
        device = src.device
        scores = torch.full((batch, beam), float("-inf"), device=device)
        scores[:, 0] = 0.0
        hyp_len = torch.zeros(batch, beam, device=device)
        done = torch.zeros(batch, beam, dtype=torch.bool, device=device)
        pad_only = torch.full((vocab,), float("-inf"), device=device)
        pad_only[PAD_ID] = 0.0
        eos_only = torch.full((vocab,), float("-inf"), device=device)
        eos_only[EOS_ID] = 0.0
        base = (torch.arange(batch, device=device) * beam).unsqueeze(1)
        token = torch.full((batch * beam, 1), BOS_ID, dtype=torch.long, device=device)
        state = memory.state
        tokens, parents, focus = [], [], []
        history = torch.empty((batch * beam, 0), dtype=torch.long, device=device)
        for step in range(int(max_lens.max())):
            out, state = self.decoder(self.tgt_embed(token), state)
            logits, weights = self.attend(out, memory)
            logp = torch.log_softmax(logits.squeeze(1).float(), dim=-1).view(batch, beam, vocab)
            if no_repeat_ngram > 0 and history.size(1) >= no_repeat_ngram:
                banned = repeated_ngram_ban(history, no_repeat_ngram, vocab).view(batch, beam, vocab)
                logp = logp.masked_fill(banned, float("-inf"))
            logp = torch.where((step + 1 >= max_lens).view(batch, 1, 1), eos_only, logp)
            logp = torch.where(done.unsqueeze(-1), pad_only, logp)
            scores, flat = (scores.unsqueeze(-1) + logp).view(batch, -1).topk(beam, dim=-1)
            parent, word = flat // vocab, flat % vocab
            rows = (base + parent).view(-1)
            state = state[:, rows]
            hyp_len = hyp_len.gather(1, parent) + (~done.gather(1, parent)).float()
            done = done.gather(1, parent) | (word == EOS_ID)
            tokens.append(word)
            parents.append(parent)
            focus.append(weights.argmax(dim=-1).view(batch, beam).gather(1, parent))
            token = word.view(-1, 1)
            history = torch.cat([history[rows], token], dim=1)
            if bool(done.all()):
                break
        best = (scores / hyp_len.clamp(min=1) ** alpha).argmax(dim=-1, keepdim=True)
        ids, attended = [], []
        for word, parent, position in zip(reversed(tokens), reversed(parents), reversed(focus), strict=True):
            ids.append(word.gather(1, best))
            attended.append(position.gather(1, best))
            best = parent.gather(1, best)
        return torch.cat(ids[::-1], dim=1), torch.cat(attended[::-1], dim=1)


def repeated_ngram_ban(history: torch.Tensor, n: int, vocab: int) -> torch.Tensor:
    """(N, vocab) mask of the subwords that would repeat an n-gram of each row of ``history`` (N, T).

    End of sentence is never banned, so a hypothesis can always stop.
    """
    windows = history.unfold(1, n, 1)
    prefix = history[:, -(n - 1) :].unsqueeze(1)
    match = (windows[:, :, : n - 1] == prefix).all(dim=-1).float()
    ban = torch.zeros(history.size(0), vocab, device=history.device).scatter_add_(1, windows[:, :, n - 1], match)
    ban[:, EOS_ID] = 0
    return ban > 0
