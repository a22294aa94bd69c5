"""Your BERT-style sentence encoder on the integer accelerator model.

Loads a local Hugging Face encoder directory (``AutoModel.from_pretrained(path,
local_files_only=True)``; nothing is downloaded), adds sentence-transformers' masked mean
pooling, quantizes it W8A8 with per-channel weights (``quant.capture`` ->
``quant.quantize``), exports the integer network (token-id and mask inputs, embeddings as
integer tables, every op integer-only), runs it on ``sim.executor`` and prints the cosine
between the integer and the FP32 sentence embeddings, and how many integer outputs differ
between the exact fake-quant model and the executor (0 expected)::

    python examples/sentence_transformer.py ~/models/all-MiniLM-L6-v2 \\
        [--sentences my_sentences.txt] [--save minilm.npz]

Without a tokenizer in the directory, random token ids of random lengths stand in for
text. The sentences calibrate the quantizers and are then embedded.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
import torch
from qaccel.quant import QuantConfig
from qaccel.quant.capture import capture
from qaccel.sim import executor
from torch import nn

from qaccel import quant
from qaccel.commands.options import input_file, output_file

SENTENCES = [
    "A man is playing a guitar on the street.", "The cat sleeps on the warm windowsill.",
    "Stock markets fell sharply after the announcement.", "She is reading a book in the park.",
    "The new phone has a larger battery and a faster chip.", "Two dogs run across the field.",
    "It will rain tomorrow in the northern regions.", "He cooked pasta with tomato sauce.",
    "The train to the airport leaves every ten minutes.", "A child is riding a red bicycle.",
    "Researchers found a new species of frog in the forest.", "The concert was sold out.",
    "Please send me the report by Friday.", "The museum opens at nine in the morning.",
    "A woman is slicing an onion in the kitchen.", "The team won the championship again.",
    "Quantized networks run faster on small accelerators.", "The river flooded the village.",
    "I forgot my umbrella at the office.", "The recipe needs two eggs and some flour.",
    "Mountains are covered with snow in winter.", "The software update fixed the bug.",
    "A group of friends is having dinner together.", "The library is closed on Sundays.",
]


class MeanPooled(nn.Module):
    """``encoder`` followed by sentence-transformers' mean pooling over the tokens the
    attention mask keeps."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).expand(h.size()).float()
        return torch.sum(h * m, 1) / torch.clamp(m.sum(1), min=1e-9)


def load_encoder(model_dir) -> tuple[nn.Module, object | None]:
    """The encoder in ``model_dir`` (eval mode) and its tokenizer (``None`` if the
    directory holds none); ``ValueError`` naming the directory if it holds no model."""
    import transformers
    path = pathlib.Path(model_dir)
    try:
        model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a local Hugging Face model directory "
                         f"({str(exc).splitlines()[0]})") from None
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError):
        tok = None
    return model.eval(), tok


def token_batches(tokenizer, sentences: list[str], vocab: int, *, batch_size: int = 8,
                  max_length: int = 32, seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """``(input_ids, attention_mask)`` batches, each padded to its longest sentence (so
    batches differ in length, as a tokenizer makes them); random ids of random lengths
    when there is no tokenizer."""
    out = []
    g = torch.Generator().manual_seed(seed)
    for i in range(0, len(sentences), batch_size):
        chunk = sentences[i:i + batch_size]
        if tokenizer is not None:
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            out.append((enc["input_ids"], enc["attention_mask"]))
            continue
        lengths = torch.randint(4, max_length + 1, (len(chunk),), generator=g)
        seq = int(lengths.max())
        ids = torch.randint(1, vocab, (len(chunk), seq), generator=g)
        out.append((ids, (torch.arange(seq)[None, :] < lengths[:, None]).long()))
    return out


def integer_sentence_embeddings(model_dir, sentences: list[str] | None = None, *,
                                w_bits: int = 8, a_bits: int = 8, batch_size: int = 8,
                                max_length: int = 32, seed: int = 0) -> dict:
    """Quantize and export the encoder in ``model_dir`` with mean pooling, run the integer
    network on ``sentences`` (default :data:`SENTENCES`) and compare. Returns ``cosine``
    (per sentence, integer vs FP32), ``outputs`` and ``differing`` (exact fake-quant vs
    executor integers), ``quantize_s`` / ``export_s`` (seconds) and ``net``."""
    encoder, tok = load_encoder(model_dir)
    model = MeanPooled(encoder).eval()
    vocab = int(encoder.config.vocab_size)
    batches = token_batches(tok, list(sentences or SENTENCES), vocab, batch_size=batch_size,
                            max_length=max_length, seed=seed)
    t0 = time.perf_counter()
    gm = capture(model, batches[0])
    qm = quant.quantize(gm, batches, QuantConfig(w_bits=w_bits, a_bits=a_bits,
                                                 per_channel=True))
    t1 = time.perf_counter()
    net = quant.export(qm, batches[0])
    t2 = time.perf_counter()
    cos, n_out, differing = [], 0, 0
    for ids, mask in batches:
        y_int = executor.run(net, (ids.numpy(), mask.numpy()))
        exact = quant.exact_outputs(qm, (ids, mask), net=net)
        n_out += y_int.size
        differing += int((exact != y_int).sum())
        with torch.no_grad():
            ref = model(ids, mask).double().numpy()
        y = net.output_q.dequantize(y_int)
        cos.append((y * ref).sum(-1) / np.linalg.norm(y, axis=-1) / np.linalg.norm(ref, axis=-1))
    return {"cosine": np.concatenate(cos), "outputs": n_out, "differing": differing,
            "quantize_s": t1 - t0, "export_s": t2 - t1, "net": net,
            "tokenizer": tok is not None}


def _model_dir(value: str) -> pathlib.Path:
    path = pathlib.Path(value).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not a directory")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=_model_dir, help="local Hugging Face encoder directory")
    p.add_argument("--sentences", type=input_file, help="text file, one sentence a line")
    p.add_argument("--save", type=output_file, help="write the integer network (.npz)")
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--a-bits", type=int, default=8)
    p.add_argument("--w-bits", type=int, default=8)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sentences = None
    if args.sentences is not None:
        sentences = [s.strip() for s in args.sentences.read_text().splitlines() if s.strip()]
        if not sentences:
            p.error(f"--sentences: {args.sentences} holds no sentence")
    try:
        r = integer_sentence_embeddings(args.model_dir, sentences, w_bits=args.w_bits,
                                        a_bits=args.a_bits, max_length=args.max_length)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    c = r["cosine"]
    print(f"{len(c)} sentences ({'tokenized' if r['tokenizer'] else 'random token ids'}), "
          f"W{args.w_bits}A{args.a_bits} per-channel, {len(r['net'].layers)} integer layers")
    print(f"cosine(integer, FP32): min {c.min():.4f}  mean {c.mean():.4f}")
    print(f"exact fake-quant vs executor: {r['differing']} of {r['outputs']} outputs differ")
    print(f"quantize {r['quantize_s']:.1f} s, export {r['export_s']:.1f} s")
    if args.save is not None:
        print(f"saved {r['net'].save(args.save)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
