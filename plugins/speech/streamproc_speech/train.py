"""Train the CTC recognizer on the cached synthetic clips; write safetensors weights.

``python -m streamproc_speech.train`` (after ``python -m streamproc_speech.synth``)
trains on one CPU thread within a CPU-time budget (wall time grows when the machine is
shared), keeps the weights with the best greedy validation word error rate (validation
voices are never trained on), and writes ``model.safetensors``, ``config.json`` and the
training part of ``model_card.json`` into ``--out``. ``--init`` continues from earlier
weights with a fresh learning-rate cycle (the shipped weights were trained in three
such stages; the card records each). Progress (step loss, epoch, validation WER, ETA)
goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from streamproc_speech.data import Augmenter, Clip, degrade, load_split
from streamproc_speech.decoding import greedy_decode
from streamproc_speech.evaluate import word_error_rate
from streamproc_speech.features import log_mel
from streamproc_speech.model import CtcRecognizer, ModelConfig, encode_text, pad_features
from streamproc_speech.synth import DEFAULT_CACHE, FESTIVAL_VOICES, FLITE_VOICES, VAL_VARIANTS

WEIGHTS_DIR = Path(__file__).parent / "weights"


def spec_augment(features: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Zero two random frequency bands (<= 10 bins) and two time spans (<= 8 frames)."""
    x = features.clone()
    frames, bins = x.shape
    for _ in range(2):
        width = rng.randint(0, 10)
        start = rng.randint(0, bins - width)
        x[:, start : start + width] = 0.0
        span = rng.randint(0, min(8, frames // 10))
        start = rng.randint(0, frames - span)
        x[start : start + span] = 0.0
    return x


def make_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Index batches of similar lengths (less padding), in random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches = []
    for i in range(0, len(order), pool):
        chunk = sorted(order[i : i + pool], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def validate(model: CtcRecognizer, features: list[torch.Tensor], texts: list[str]) -> float:
    """Greedy word error rate of ``model`` on pre-computed validation features."""
    model.eval()
    hyps = []
    for i in range(0, len(features), 64):
        padded, lengths = pad_features(features[i : i + 64])
        log_probs, out_lengths = model(padded, lengths)
        hyps += [greedy_decode(lp[:n].numpy()) for lp, n in zip(log_probs, out_lengths, strict=True)]
    model.train()
    return word_error_rate(texts, hyps)


def train(args: argparse.Namespace) -> dict[str, object]:
    """Run training; returns the training facts for the model card."""
    started, cpu_started = time.monotonic(), time.process_time()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    train_clips: list[Clip] = load_split("train", args.cache)[: args.max_clips]
    val_clips = load_split("val", args.cache)
    val_features = [log_mel(degrade(c.samples, "clean", i)) for i, c in enumerate(val_clips)]
    val_texts = [c.text for c in val_clips]
    augment = Augmenter(args.seed)
    config = ModelConfig(hidden=args.hidden, layers=args.layers)
    model = CtcRecognizer(config)
    if args.init is not None:  # continue from earlier weights (a warm restart of the schedule)
        model.load_state_dict(load_file(str(args.init / "model.safetensors")))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{len(train_clips)} train clips, {len(val_clips)} val clips, {n_params} params", file=sys.stderr)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    steps_per_epoch = math.ceil(len(train_clips) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total_steps, pct_start=0.15)
    targets = [torch.tensor(encode_text(c.text)) for c in train_clips]
    approx_frames = [len(c.samples) // 160 for c in train_clips]
    best_wer, best_state, best_epoch, history = math.inf, None, 0, []
    budget_s = args.budget_min * 60
    for epoch in range(1, args.epochs + 1):
        epoch_start, epoch_cpu_start, losses = time.monotonic(), time.process_time(), []
        for batch in make_batches(approx_frames, args.batch_size, rng):
            feats = [spec_augment(log_mel(augment(train_clips[i].samples)), rng) for i in batch]
            padded, lengths = pad_features(feats)
            log_probs, out_lengths = model(padded, lengths)
            loss = torch.nn.functional.ctc_loss(
                log_probs.transpose(0, 1),
                torch.cat([targets[i] for i in batch]),
                out_lengths,
                torch.tensor([len(targets[i]) for i in batch]),
                zero_infinity=True,
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            if len(losses) % 50 == 0:
                print(f"  step {len(losses)}/{steps_per_epoch} loss {np.mean(losses[-50:]):.3f}", file=sys.stderr)
        val_wer = validate(model, val_features, val_texts)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_wer": val_wer})
        if val_wer < best_wer:
            best_wer, best_epoch = val_wer, epoch
            best_state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        cpu, epoch_cpu = time.process_time() - cpu_started, time.process_time() - epoch_cpu_start
        eta = (time.monotonic() - epoch_start) * (args.epochs - epoch)
        print(
            f"epoch {epoch}/{args.epochs} loss {np.mean(losses):.3f} val WER {val_wer:.3f} "
            f"(best {best_wer:.3f} @ {best_epoch}) epoch {time.monotonic() - epoch_start:.0f} s, "
            f"CPU {cpu / 60:.1f} min, wall {(time.monotonic() - started) / 60:.1f} min, ETA {eta / 60:.1f} min",
            file=sys.stderr,
        )
        if cpu + epoch_cpu > budget_s:
            print(f"stopping: the next epoch would exceed {args.budget_min} CPU minutes", file=sys.stderr)
            break
    assert best_state is not None
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(best_state, str(args.out / "model.safetensors"))
    doc = {"model": config.to_json(), "beam": 12, "min_confidence": args.min_confidence}
    (args.out / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
    return {
        "command": "python -m streamproc_speech.train " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "wall_time_s": round(time.monotonic() - started),
        "cpu_time_s": round(time.process_time() - cpu_started),
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_val_wer_greedy": round(best_wer, 4),
        "train_clips": len(train_clips),
        "val_clips": len(val_clips),
        "parameters": n_params,
        "history": history,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--budget-min", type=float, default=25.0, help="CPU-time budget (1 thread)")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-clips", type=int, default=None, help="use the first N clips")
    parser.add_argument("--init", type=Path, default=None, help="start from the weights in this folder")
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=0.5,
        help="rejection threshold stored with the weights; choose it with `heldout calibrate --write-threshold`",
    )
    args = parser.parse_args(argv)
    facts = train(args)
    if args.init is not None:  # keep the record of the stage these weights started from
        facts["initialised_from"] = json.loads((args.init / "model_card.json").read_text())["training"]
    write_model_card(args.out, facts)
    print(f"wrote {args.out} in {facts['wall_time_s']} s", file=sys.stderr)


def write_model_card(folder: Path, training: dict[str, object]) -> None:
    """Write ``model_card.json`` (held-out metrics are added by ``evaluate --update-card``)."""
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    config = json.loads((folder / "config.json").read_text())["model"]
    card = {
        "name": "streamproc-speech",
        "version": f"speech-ctc-{digest[:12]}",
        "architecture": (
            f"80-band log-mel (25 ms / 10 ms) -> 2 strided Conv2d ({config['conv_channels']} ch, "
            f"time strides {config['time_strides']}, frequency /4) -> linear {config['hidden']} -> "
            f"{config['layers']} bidirectional GRU layers ({config['hidden']} per direction) -> "
            "CTC head over 27 characters + blank; greedy or vocabulary-constrained beam search; "
            "energy-based voice activity detection splits long audio into utterances"
        ),
        "parameters": training["parameters"],
        "data": (
            "synthetic speech made by `python -m streamproc_speech.synth` with Debian espeak-ng "
            "(GPL-3+) and flite (BSD-style) saying phrases of the media-command grammar "
            "(streamproc_speech.grammar); the synthesised audio is generated data, no "
            "third-party recordings ship. Real-speech check: Debian pocketsphinx-testdata (BSD-2)."
        ),
        "split": {
            "train": "espeak-ng: every installed variant except the validation ones, with 8 English "
            f"accents, random speed/pitch/word gap; flite {list(FLITE_VOICES)} with random duration "
            "stretch; augmentation: speed, gain, telephone band, reverb, white/pink/brown noise",
            "validation": f"espeak-ng variants {list(VAL_VARIANTS)} (model selection and the rejection threshold only)",
            "test": f"the festival engine, voices {list(FESTIVAL_VOICES)}: never used in training or "
            "selection; phrases drawn with separate seeds (the closed command language means "
            "phrases themselves recur)",
        },
        "training": training,
    }
    (folder / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
