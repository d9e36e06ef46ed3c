"""Resample a shipped (or local) TopK SAE's dead latents, without training, and measure it on held-out text.

This is round 1 of the 16k SAE's second pass (round 2 is ``interp-steer train-sae --init-from <this output>
--resample-dead ...``, which resamples again and fine-tunes):

    python scripts/resample_sae.py --sae /tmp/sae16k_first --output-dir /tmp/sae16k_resampled

where /tmp/sae16k_first holds the first export, now replaced in the package; from git:
``git show 14779a6:interp_steer/saes/files/smollm2-135m-instruct-16k/blocks.15.hook_resid_post/<file>`` for
cfg.json, sae_weights.safetensors and interp_steer.json.

Sample: the activations at the SAE's hook over the first ``--tokens`` tokens of the first ``--docs`` documents
of the corpus' training split (special-token positions left out), the same split ``train-sae`` uses. Writes the
SAE (float32, sae-lens folder) and ``resample.json`` (the resampling report and the held-out quality).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import interp_steer as its
from interp_steer.data.corpus import load_corpus, shared_corpus_path
from interp_steer.errors import InterpSteerError
from interp_steer.saes.quality import sae_quality
from interp_steer.saes.resample import resample_dead_latents
from interp_steer.saes.training import SAETrainingConfig, sample_activations, tokenize_corpus
from interp_steer.validation import dumps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sae", default="16384", help="shipped width or name, or a sae-lens folder (default: 16384)")
    p.add_argument("--docs", type=int, default=4000, help="training-split documents to sample from")
    p.add_argument("--tokens", type=int, default=65_536, help="tokens to sample (rows of train-sae's default context size, 256)")
    p.add_argument("--iters", type=int, default=10, help="k-means rounds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality-tokens", type=int, default=30_000, help="held-out tokens for the quality report")
    p.add_argument("--output-dir", required=True)
    args = p.parse_args(argv)
    try:
        for name in ("docs", "tokens", "quality_tokens"):
            if getattr(args, name) < 1:
                raise InterpSteerError(f"--{name.replace('_', '-')} must be >= 1")
        corpus = shared_corpus_path()
        if corpus is None:
            raise InterpSteerError("../shared/data/corpus/mixed-text.jsonl.gz not found")
        out = Path(args.output_dir)
        if out.exists() and any(out.iterdir()):
            raise InterpSteerError(f"output folder {out} is not empty")
    except InterpSteerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.time()
    model = its.load_model()
    # train-sae's split: the defaults of SAETrainingConfig (which the CLI's --heldout-fraction / --seed share)
    defaults = SAETrainingConfig()
    split = dict(heldout_fraction=defaults.heldout_fraction, seed=defaults.seed, tokenizer=model.tokenizer)
    train = load_corpus(corpus, split="train", **split)
    held = load_corpus(corpus, split="heldout", **split)
    rows = tokenize_corpus(train[: args.docs], model.tokenizer, defaults.context_size, max_tokens=args.tokens,
                           progress=False)
    rows = rows[: max(1, args.tokens // defaults.context_size)]
    sae = its.load_sae(path=args.sae, model=model).float()
    acts = sample_activations(model, rows, sae.cfg.metadata.hook_name, progress=False)
    report = resample_dead_latents(sae, acts, iters=args.iters, seed=args.seed)
    print(report, flush=True)
    quality = sae_quality(model, sae, held, max_tokens=args.quality_tokens, progress=False)
    print(quality, flush=True)
    tmp = out.with_name(f".{out.name}.partial")
    sae.save_model(str(tmp))
    (tmp / "resample.json").write_text(dumps({
        "source_sae": args.sae, "command": "python scripts/resample_sae.py " + " ".join(sys.argv[1:]),
        "sample": {"docs": args.docs, "tokens": int(acts.shape[0]), "rows": int(rows.shape[0])},
        "report": report.to_dict(), "quality_heldout": quality.to_dict(), "seconds": round(time.time() - t0),
    }, indent=2))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
