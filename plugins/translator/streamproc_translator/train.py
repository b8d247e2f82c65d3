"""Train the English -> Spanish translator and write its weights, vocabularies and card.

Data: the training split of the aligned Bible verses (both sides <= ``--max-words``)
plus, unless ``--no-catalogs``, the installed Spanish gettext catalogs. The held-out
and validation verses are chosen by key hash before anything is learned (``data``);
the held-out pairs are written next to the weights. BPE vocabularies are learned on
the training text only. Each epoch ends with greedy chrF on the validation verses;
the best epoch is kept. The learning rate decays linearly to a tenth over the planned
epochs.
Validation decodes greedily; the shipped config asks for beam search (``--beam-size``).
Training stops after ``--epochs`` or when the next epoch would overrun the time budget.

    python -m streamproc_translator.train [--out DIR] [--seed 0] [--time-budget-min 24]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import sacrebleu
import torch
from safetensors.torch import save_file
from torch import nn

from streamproc_translator import data
from streamproc_translator.bpe import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Tokenizer,
    learn_bpe,
    normalize_source,
    normalize_target,
)
from streamproc_translator.evaluate import evaluate, translate_all
from streamproc_translator.model import ModelConfig, Seq2SeqTranslator
from streamproc_translator.translator import (
    CONFIG_FILE,
    SOURCE_TOKENIZER_FILE,
    TARGET_TOKENIZER_FILE,
    WEIGHTS_FILE,
    TextTranslator,
)

DEFAULT_OUT = Path(__file__).parent / "weights"
Example = tuple[list[int], list[int], list[int]]
"""Source ids with punctuation, source ids without punctuation, target ids (bos ... eos)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--time-budget-min", type=float, default=25.0, help="safety stop")
    parser.add_argument("--max-words", type=int, default=18, help="verse length limit")
    parser.add_argument("--catalog-max-words", type=int, default=6)
    parser.add_argument("--no-catalogs", action="store_true", help="Bible verses only")
    parser.add_argument("--max-pairs", type=int, default=0, help="use N pairs (smoke runs)")
    parser.add_argument("--merges", type=int, default=2500, help="BPE merges per side")
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument(
        "--strip-punctuation-prob",
        type=float,
        default=0.25,
        help="share of sources shown without punctuation, like speech transcripts",
    )
    parser.add_argument("--max-source-tokens", type=int, default=64)
    parser.add_argument("--max-target-tokens", type=int, default=96)
    parser.add_argument("--valid-size", type=int, default=300)
    parser.add_argument("--beam-size", type=int, default=4, help="beam of the shipped config")
    return parser.parse_args(argv)


def encode_examples(
    pairs: Sequence[data.Pair], source: Tokenizer, target: Tokenizer, args: argparse.Namespace
) -> list[Example]:
    examples = []
    for p in pairs:
        plain = source.encode(normalize_source(p.en))[: args.max_source_tokens]
        stripped = source.encode(normalize_source(p.en, strip_punctuation=True))
        tgt = target.encode(normalize_target(p.es))[: args.max_target_tokens - 2]
        if plain and tgt:
            stripped = stripped[: args.max_source_tokens] or plain
            examples.append((plain, stripped, [BOS_ID, *tgt, EOS_ID]))
    return examples


def make_batches(
    examples: Sequence[Example], batch_size: int, strip_prob: float, rng: random.Random
) -> list[list[tuple[list[int], list[int]]]]:
    """Shuffled batches of (source, target) of similar source length."""
    chosen = [(s if rng.random() < strip_prob else p, t) for p, s, t in examples]
    rng.shuffle(chosen)
    batches = []
    chunk = batch_size * 32
    for start in range(0, len(chosen), chunk):
        part = sorted(chosen[start : start + chunk], key=lambda e: len(e[0]))
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(
    batch: Sequence[tuple[list[int], list[int]]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s, _ in batch])
    src = torch.full((len(batch), int(lengths.max())), PAD_ID, dtype=torch.long)
    tgt = torch.full((len(batch), max(len(t) for _, t in batch)), PAD_ID, dtype=torch.long)
    for row, (s, t) in enumerate(batch):
        src[row, : len(s)] = torch.tensor(s)
        tgt[row, : len(t)] = torch.tensor(t)
    return src, lengths, tgt


def valid_chrf(translator: TextTranslator, pairs: Sequence[data.Pair]) -> float:
    translator.model.eval()
    hypotheses = translate_all(translator, [p.en for p in pairs])
    translator.model.train()
    return sacrebleu.corpus_chrf(hypotheses, [[p.es for p in pairs]]).score


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    budget_s = args.time_budget_min * 60
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    log("exporting and aligning the SWORD modules ...")
    verses = data.bible_pairs()
    heldout = data.heldout_pairs(verses)
    data.write_pairs(args.out / data.HELDOUT_FILE, heldout)
    short = [p for p in verses if max(len(p.en.split()), len(p.es.split())) <= args.max_words]
    train_pairs = [p for p in short if data.split_of(p.key) == "train"]
    valid = [
        p
        for p in short
        if data.split_of(p.key) == "valid" and max(len(p.en.split()), len(p.es.split())) <= data.HELDOUT_MAX_WORDS
    ]
    valid = sorted(valid, key=lambda p: hashlib.sha256(p.key.encode()).hexdigest())
    valid = valid[: args.valid_size]
    catalogs = [] if args.no_catalogs else data.catalog_pairs("es", args.catalog_max_words)
    train_pairs += catalogs
    if args.max_pairs:
        train_pairs = rng.sample(train_pairs, min(args.max_pairs, len(train_pairs)))
    log(
        f"{len(verses)} aligned verses; training on {len(train_pairs)} pairs "
        f"({len(catalogs)} from catalogs), {len(valid)} validation, {len(heldout)} held out"
    )

    source_bpe = learn_bpe([normalize_source(p.en) for p in train_pairs], args.merges)
    target_bpe = learn_bpe([normalize_target(p.es) for p in train_pairs], args.merges)
    source, target = Tokenizer(source_bpe), Tokenizer(target_bpe)
    examples = encode_examples(train_pairs, source, target, args)
    log(f"vocabularies: source {len(source)}, target {len(target)}; {len(examples)} examples")

    config = ModelConfig(len(source), len(target), args.embed_dim, args.hidden, args.dropout)
    model = Seq2SeqTranslator(config)
    translator = TextTranslator(model, source, target, args.max_source_tokens, args.max_target_tokens, 1, "training")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    planned_steps = args.epochs * -(-len(examples) // args.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.1, 1.0 - 0.9 * step / planned_steps))
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD_ID, label_smoothing=args.label_smoothing)
    params = sum(p.numel() for p in model.parameters())
    log(f"model: {params} parameters")

    best_chrf, best_epoch, best_state = -1.0, 0, None
    epoch_s = 0.0
    history = []
    for epoch in range(1, args.epochs + 1):
        elapsed = time.monotonic() - started
        if epoch > 1 and elapsed + epoch_s > budget_s:
            log(f"stopping: another epoch ({epoch_s:.0f} s) would overrun the time budget")
            break
        epoch_start = time.monotonic()
        model.train()
        batches = make_batches(examples, args.batch_size, args.strip_punctuation_prob, rng)
        total_loss, total_tokens = 0.0, 0
        for index, batch in enumerate(batches, 1):
            src, lengths, tgt = collate(batch)
            logits = model(src, lengths, tgt[:, :-1])
            loss = loss_fn(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            tokens = int((tgt[:, 1:] != PAD_ID).sum())
            total_loss += loss.item() * tokens
            total_tokens += tokens
            if index % 50 == 0 or index == len(batches):
                spent = time.monotonic() - epoch_start
                eta = spent / index * (len(batches) - index)
                log(
                    f"epoch {epoch}/{args.epochs} batch {index}/{len(batches)} "
                    f"loss {total_loss / total_tokens:.3f} "
                    f"{total_tokens / spent:.0f} tok/s, epoch ETA {eta:.0f} s"
                )
        chrf = valid_chrf(translator, valid)
        epoch_s = time.monotonic() - epoch_start
        history.append(
            {
                "epoch": epoch,
                "loss": round(total_loss / total_tokens, 4),
                "valid_chrf": round(chrf, 2),
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        if chrf > best_chrf:
            best_chrf, best_epoch = chrf, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        left = budget_s - (time.monotonic() - started)
        log(
            f"epoch {epoch}: valid chrF {chrf:.1f} (best {best_chrf:.1f} at epoch {best_epoch}), "
            f"{epoch_s:.0f} s, budget left {left:.0f} s"
        )

    assert best_state is not None
    save_file(best_state, str(args.out / WEIGHTS_FILE))
    (args.out / WEIGHTS_FILE).chmod(0o644)  # safetensors writes 0600; the package is shared
    (args.out / SOURCE_TOKENIZER_FILE).write_text(json.dumps(source_bpe, ensure_ascii=False))
    (args.out / TARGET_TOKENIZER_FILE).write_text(json.dumps(target_bpe, ensure_ascii=False))
    stored = {
        "model": config.__dict__,
        "max_source_tokens": args.max_source_tokens,
        "max_target_tokens": args.max_target_tokens,
        "beam_size": args.beam_size,
    }
    (args.out / CONFIG_FILE).write_text(json.dumps(stored, indent=2) + "\n")
    wall_s = time.monotonic() - started
    log(f"trained in {wall_s:.0f} s; evaluating on {len(heldout)} held-out pairs ...")
    metrics = evaluate(args.out, heldout)
    log(json.dumps(metrics))
    card = {
        "model": "streamproc-translator",
        "version": metrics["model_version"],
        "task": "English -> Spanish text translation (en->es only)",
        "architecture": (
            f"GRU encoder-decoder: bidirectional GRU encoder ({args.hidden} per direction), "
            f"one-layer GRU decoder ({args.hidden}), Luong general attention, embeddings "
            f"{args.embed_dim}, output tied to the target embedding; BPE {args.merges} merges "
            f"per side; beam search ({args.beam_size}), <unk> replaced by the most-attended source word"
        ),
        "parameters": params,
        "vocabulary": {"source": len(source), "target": len(target)},
        "data": {
            "bible": "World English Bible (engWEB2015eb, Debian sword-text-web) aligned with "
            "Reina-Valera 1909 (spaRV1909eb, Debian sword-text-sparv) by verse key; both "
            "public domain",
            "catalogs": "msgid/msgstr pairs of the Spanish gettext catalogs installed on the "
            "training machine (/usr/share/locale/es/LC_MESSAGES/*.mo; each under its "
            "package's licence, mostly GPL/LGPL); not redistributed",
            "training_pairs": len(examples),
            "catalog_pairs": len(catalogs),
            "validation_pairs": len(valid),
        },
        "split": (
            "by SHA-256 of the verse key: 10% test, 3% validation, 87% training, fixed "
            "before training; held out = the first 500 test verses (by key hash) with <= 15 "
            "words per side, shipped as weights/heldout.tsv; catalog pairs train only"
        ),
        "training": {
            "command": " ".join(["python -m streamproc_translator.train", *(sys.argv[1:] if argv is None else argv)]),
            "seed": args.seed,
            "wall_time_s": round(wall_s),
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "history": history,
            "hardware": f"CPU, 1 thread ({platform.machine()})",
        },
        "heldout_metrics": {k: metrics[k] for k in ("pairs", "model", "dictionary", "copy")},
        "metric_notes": "sacrebleu corpus BLEU and chrF, default settings, case-sensitive",
        "date": datetime.date.today().isoformat(),
    }
    (args.out / "model_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
