"""Train the English -> Spanish GRU translator and write its weights, vocabularies and card.

Data (sources, licences and sizes go to the model card):

- the training split of the aligned Bible verses (both sides <= ``--max-words``);
- unless ``--no-catalogs``, the installed Spanish gettext catalogs;
- the general-domain pairs of Debian's DDTP and AppStream metadata (``corpus``), of
  source packages neither held out (20 %) nor kept for validation (5 %);
- ``--distill`` English description texts of such packages translated by Apertium
  (sequence-level distillation).

Every training pair that duplicates a held-out text, exactly or nearly, is dropped
(``heldout_filter``, on both sides, distilled pairs included); both held-out sets were
fixed before training (the Bible one by verse-key hash, the general one shipped as
``weights/general_heldout.tsv``). BPE vocabularies are learned on the training text only.
Each epoch ends with greedy chrF on the Bible and general validation sets; the epoch with
the best mean is kept. The learning rate decays linearly to a tenth over the planned
epochs. Training stops after ``--epochs`` or when the next epoch would overrun
``--time-budget-min``. The DDTP and AppStream apt lists must have been fetched
(``corpus.fetch_lists``); ``python -m streamproc_translator.reproduce`` fetches them and
retrains with the shipped model's recorded arguments.

    python -m streamproc_translator.train [--out DIR] [--seed 0] [--time-budget-min 45] [--distill 15000]
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
from collections.abc import Callable, Sequence
from pathlib import Path

import sacrebleu
import torch
from safetensors.torch import save_file
from torch import nn

from streamproc_translator import corpus, data
from streamproc_translator.apertium import ApertiumTranslator
from streamproc_translator.bpe import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    Tokenizer,
    learn_bpe,
    normalize_source,
    normalize_target,
)
from streamproc_translator.evaluate import translate_all
from streamproc_translator.model import ModelConfig, Seq2SeqTranslator
from streamproc_translator.translator import (
    CONFIG_FILE,
    SOURCE_TOKENIZER_FILE,
    TARGET_TOKENIZER_FILE,
    WEIGHTS_FILE,
    TextTranslator,
)

DEFAULT_OUT = Path(__file__).parent / "weights"
DATA_SOURCES = {
    "bible": "World English Bible (engWEB2015eb, Debian sword-text-web) aligned with Reina-Valera 1909 "
    "(spaRV1909eb, Debian sword-text-sparv) by verse key; both public domain",
    "catalogs": "msgid/msgstr pairs of the Spanish gettext catalogs installed on the training machine "
    "(/usr/share/locale/es/LC_MESSAGES/*.mo; each under its package's licence, mostly GPL/LGPL), except the "
    "catalogs of held-out or validation source packages (found with dpkg -S); not redistributed",
    "ddtp": "Debian package descriptions (Translation-en) and their Spanish DDTP translations (Translation-es), "
    "bookworm main: synopses and 1:1 sentence-aligned long descriptions; each under its package's licence",
    "appstream": "AppStream (DEP-11) names, summaries and description sentences with their Spanish translations, "
    "bookworm main; component metadata licences (mostly CC0-1.0 / FSFAP)",
    "distilled": "English synopses and description sentences of Translation-en (packages of no held-out or "
    "validation source package, none with a human Spanish translation) translated by Apertium eng-spa "
    "(GPL; Debian apertium-eng-spa): sequence-level distillation",
}
DEDUPE_RULES = (
    "every training pair is dropped when its English side duplicates a held-out English text (Bible or "
    "general), or its Spanish side a held-out Spanish text: exact = same letters after NFKC + lowercase "
    "(punctuation, digits, spaces ignored); near = sharing >= 50% of the word trigrams of a held-out text, or, "
    "for a held-out text of fewer than 3 trigrams and 2 or more words, >= 50% of its word bigrams in a text of at "
    "most twice its words; no text of a held-out (20%) or validation (5%) source package is trained on (DDTP, "
    "AppStream, distilled descriptions, gettext catalogs)"
)
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
    parser.add_argument("--no-catalogs", action="store_true", help="leave out the gettext catalogs")
    parser.add_argument("--distill", type=int, default=20000, help="English texts translated by Apertium (0: none)")
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
    parser.add_argument("--no-repeat-ngram", type=int, default=3, help="repetition guard of the shipped config")
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


def heldout_filter(heldout: Sequence[tuple[str, str]]) -> Callable[[data.Pair], bool]:
    """A test of training pairs against held-out (English, Spanish) pairs: true when the pair is
    fresh, false when its English side duplicates a held-out English text or its Spanish side a
    held-out Spanish text, exactly or nearly (``corpus.DuplicateFilter``)."""
    english = corpus.DuplicateFilter(en for en, _ in heldout)
    spanish = corpus.DuplicateFilter(es for _, es in heldout)

    def fresh(pair: data.Pair) -> bool:
        return pair.en not in english and pair.es not in spanish

    return fresh


def held_out_package(source_package: str) -> bool:
    """Whether no text of this source package may be trained on (held out for testing or validation)."""
    return corpus.is_heldout_package(source_package) or corpus.is_validation_package(source_package)


def training_data(
    args: argparse.Namespace, rng: random.Random
) -> tuple[list[data.Pair], list[data.Pair], list[data.Pair], dict[str, int]]:
    """Training pairs, Bible and general validation pairs, and the size of each source.

    Every training source is deduplicated (exactly and nearly, ``corpus.DuplicateFilter``)
    against both held-out sets, which were fixed before training: the Bible held-out
    verses and the general held-out set of whole held-out source packages. No text of a
    held-out or validation source package is trained on, whatever its source (DDTP,
    AppStream, distilled descriptions, gettext catalogs).
    """
    log("exporting and aligning the SWORD modules ...")
    verses = data.bible_pairs()
    bible_heldout = data.heldout_pairs(verses)
    general_heldout = corpus.shipped_general()
    held = corpus.DuplicateFilter([p.en for p in bible_heldout] + [p.en for p in general_heldout])
    fresh = heldout_filter([(p.en, p.es) for p in bible_heldout] + [(p.en, p.es) for p in general_heldout])

    short = [p for p in verses if max(len(p.en.split()), len(p.es.split())) <= args.max_words]
    bible = [p for p in short if data.split_of(p.key) == "train"]
    bible_kept = [p for p in bible if fresh(p)]
    valid = [
        p
        for p in short
        if data.split_of(p.key) == "valid" and max(len(p.en.split()), len(p.es.split())) <= data.HELDOUT_MAX_WORDS
    ]
    valid = sorted(valid, key=lambda p: hashlib.sha256(p.key.encode()).hexdigest())[: args.valid_size]
    catalogs = [] if args.no_catalogs else data.catalog_pairs("es", args.catalog_max_words)
    catalogs = [p for p in catalogs if not held_out_package(p.key.split(":")[1]) and fresh(p)]

    log("reading Debian's package descriptions (DDTP) and AppStream metadata ...")
    sources = corpus.source_of_binaries()
    general = [p for p in corpus.all_pairs() if not corpus.is_heldout_package(p.package)]
    general_valid = [data.Pair(p.key, p.en, p.es) for p in general if corpus.is_validation_package(p.package)]
    general_valid = sorted(general_valid, key=lambda p: hashlib.sha256(p.key.encode()).hexdigest())
    general_train = [data.Pair(p.key, p.en, p.es) for p in general if not corpus.is_validation_package(p.package)]
    general_kept = [p for p in general_train if fresh(p)]

    distilled: list[data.Pair] = []
    if args.distill:
        human = corpus.DuplicateFilter([])
        for pair in general:
            human.exact.add(corpus.fingerprint(pair.en))
        seen: set[str] = set()
        english = []
        for source, text in corpus.english_descriptions(sources):
            key = corpus.fingerprint(text)
            words = len(text.split())
            if held_out_package(source) or not 2 <= words <= args.max_words * 2 or key in seen or key in human.exact:
                continue
            seen.add(key)
            english.append((hashlib.sha256(text.encode()).hexdigest(), text, source))
        english.sort()
        candidates = [(source, text) for _, text, source in english[: args.distill * 2] if text not in held]
        candidates = candidates[: args.distill]
        log(f"distilling {len(candidates)} English description texts with Apertium ...")
        spanish = ApertiumTranslator().translate([text for _, text in candidates])
        distilled = [
            pair
            for i, ((source, en), es) in enumerate(zip(candidates, spanish, strict=True))
            if es and fresh(pair := data.Pair(f"apertium:{source}:{i}", en, es))
        ]

    pairs = bible_kept + catalogs + general_kept + distilled
    if args.max_pairs:
        pairs = rng.sample(pairs, min(args.max_pairs, len(pairs)))
    sizes = {
        "bible_train": len(bible),
        "bible_dropped_as_heldout_duplicates": len(bible) - len(bible_kept),
        "bible_kept": len(bible_kept),
        "catalog_pairs": len(catalogs),
        "general_human_train": len(general_train),
        "general_dropped_as_heldout_duplicates": len(general_train) - len(general_kept),
        "general_human_kept": len(general_kept),
        "distilled_apertium": len(distilled),
        "training_pairs": len(pairs),
        "bible_validation": len(valid),
        "general_validation": min(len(general_valid), args.valid_size),
    }
    return pairs, valid, general_valid[: args.valid_size], sizes


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    budget_s = args.time_budget_min * 60
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    data_started = time.monotonic()
    train_pairs, valid, valid_general, sizes = training_data(args, rng)
    log(f"training data in {time.monotonic() - data_started:.0f} s: {json.dumps(sizes)}")

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

    def lr_factor(step: int) -> float:
        # Decays to a tenth by the planned end, or by the end of the time budget if that comes first.
        progress = max(step / planned_steps, (time.monotonic() - started) / budget_s)
        return max(0.1, 1.0 - 0.9 * progress)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
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
        bible_chrf = valid_chrf(translator, valid)
        general_chrf = valid_chrf(translator, valid_general)
        # Select on both domains, so that the general one cannot win by collapsing the Bible one.
        chrf = (bible_chrf + general_chrf) / 2
        epoch_s = time.monotonic() - epoch_start
        history.append(
            {
                "epoch": epoch,
                "loss": round(total_loss / total_tokens, 4),
                "valid_chrf_bible": round(bible_chrf, 2),
                "valid_chrf_general": round(general_chrf, 2),
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        if chrf > best_chrf:
            best_chrf, best_epoch = chrf, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        left = budget_s - (time.monotonic() - started)
        log(
            f"epoch {epoch}: valid chrF bible {bible_chrf:.1f} general {general_chrf:.1f} "
            f"(best mean {best_chrf:.1f} at epoch {best_epoch}), "
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
        "no_repeat_ngram": args.no_repeat_ngram,
    }
    (args.out / CONFIG_FILE).write_text(json.dumps(stored, indent=2) + "\n")
    wall_s = time.monotonic() - started
    log(f"trained in {wall_s:.0f} s; measure it with python -m streamproc_translator.evaluate --weights-dir {args.out}")
    card = {
        "model": "streamproc-translator",
        "version": "translator-" + hashlib.sha256((args.out / WEIGHTS_FILE).read_bytes()).hexdigest()[:12],
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
            "sources": DATA_SOURCES,
            "sizes": sizes,
            "training_examples": len(examples),
            "dedupe": DEDUPE_RULES,
        },
        "training": {
            "command": " ".join(["python -m streamproc_translator.train", *(sys.argv[1:] if argv is None else argv)]),
            "seed": args.seed,
            "wall_time_s": round(wall_s),
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "history": history,
            "hardware": f"CPU, 1 thread ({platform.machine()})",
        },
        "date": datetime.date.today().isoformat(),
    }
    (args.out / "model_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
