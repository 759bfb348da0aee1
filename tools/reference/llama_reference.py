#!/usr/bin/env python3
"""Independent reference for specd's model runtime: a SentencePiece-style tokenizer and
the Llama forward pass in plain numpy (float64), reading a GGUF file with the `gguf`
package. It writes the fixture that tests/model/ compares the C implementation against,
so CI never needs Python, numpy or another engine. Run by hand; see README.md here.

Nothing here shares code with specd's C sources: the tokenizer is the naive
"merge the best adjacent pair, leftmost on ties, until none is left" loop, and the
forward pass recomputes the whole sequence for every token (no KV cache).
"""

import argparse
import hashlib
import json
import math
import platform
import sys
from importlib.metadata import version

import gguf
import numpy as np

SPACE = "\u2581"  # SentencePiece's visible space, "▁"

# tokenizer.ggml.token_type values
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


class Tokenizer:
    """SentencePiece-style BPE over UTF-8 characters with byte fallback, as GGUF
    "llama" vocabularies are meant to be used."""

    def __init__(self, reader):
        self.pieces = [bytes(reader.fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8")
                       for i in reader.fields["tokenizer.ggml.tokens"].data]
        n = len(self.pieces)
        self.scores = list(field(reader, "tokenizer.ggml.scores", [0.0] * n))
        self.types = list(field(reader, "tokenizer.ggml.token_type", [TT_NORMAL] * n))
        self.bos = int(field(reader, "tokenizer.ggml.bos_token_id", 1))
        self.eos = int(field(reader, "tokenizer.ggml.eos_token_id", 2))
        self.unk = int(field(reader, "tokenizer.ggml.unknown_token_id", 0))
        self.add_bos = bool(field(reader, "tokenizer.ggml.add_bos_token", True))
        self.add_space_prefix = bool(field(reader, "tokenizer.ggml.add_space_prefix", True))
        # Only ordinary pieces take part in merging and lookup: text never turns into
        # a control, unknown, unused or byte token by spelling its name.
        self.lookup = {}
        for i, (p, t) in enumerate(zip(self.pieces, self.types)):
            if t in (0, TT_NORMAL, TT_USER) and p not in self.lookup:
                self.lookup[p] = i
        self.byte_ids = {}
        for i, (p, t) in enumerate(zip(self.pieces, self.types)):
            if t == TT_BYTE and len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
                self.byte_ids[int(p[3:5], 16)] = i

    def encode(self, text: bytes, add_bos: bool):
        ids = [self.bos] if add_bos else []
        if not text:
            return ids
        if self.add_space_prefix:
            text = b" " + text
        text = text.replace(b" ", SPACE.encode())
        # Symbols are valid UTF-8 characters; any byte that does not start a valid
        # character is a symbol of its own (it will fall back to its byte token).
        syms = []
        i = 0
        while i < len(text):
            lead = text[i]
            n = 1 if lead < 0x80 else 2 if lead >> 5 == 6 else 3 if lead >> 4 == 14 \
                else 4 if lead >> 3 == 30 else 1
            try:
                if len(text[i:i + n].decode("utf-8")) != 1:
                    n = 1
            except UnicodeDecodeError:
                n = 1
            syms.append(text[i:i + n])
            i += n
        while True:
            best = None
            for j in range(len(syms) - 1):
                merged = syms[j] + syms[j + 1]
                try:
                    tid = self.lookup[merged.decode("utf-8")]
                except (KeyError, UnicodeDecodeError):
                    continue
                if best is None or self.scores[tid] > best[0]:
                    best = (self.scores[tid], j)
            if best is None:
                break
            j = best[1]
            syms[j:j + 2] = [syms[j] + syms[j + 1]]
        for s in syms:
            try:
                ids.append(self.lookup[s.decode("utf-8")])
            except (KeyError, UnicodeDecodeError):
                for b in s:
                    ids.append(self.byte_ids.get(b, self.unk))
        return ids

    def decode(self, ids):
        out = bytearray()
        prev = None
        for t in ids:
            ty = self.types[t]
            if ty == TT_CONTROL or ty == TT_UNUSED:
                piece = b""
            elif ty == TT_BYTE:
                piece = bytes([int(self.pieces[t][3:5], 16)])
            elif ty == TT_UNKNOWN:
                piece = "\u2585".encode()
            else:
                piece = self.pieces[t].replace(SPACE, " ").encode()
                if self.add_space_prefix and (prev is None or prev == self.bos) \
                        and piece.startswith(b" "):
                    piece = piece[1:]
            out += piece
            prev = t
        return bytes(out)


class Llama:
    """Llama-2 forward pass, float64, whole sequence at once with a causal mask."""

    def __init__(self, reader):
        arch = field(reader, "general.architecture")
        assert arch == "llama", arch
        self.dim = int(field(reader, "llama.embedding_length"))
        self.n_layer = int(field(reader, "llama.block_count"))
        self.n_head = int(field(reader, "llama.attention.head_count"))
        self.n_kv = int(field(reader, "llama.attention.head_count_kv", self.n_head))
        self.eps = float(field(reader, "llama.attention.layer_norm_rms_epsilon"))
        self.theta = float(field(reader, "llama.rope.freq_base", 10000.0))
        self.hd = self.dim // self.n_head
        self.rope_dim = int(field(reader, "llama.rope.dimension_count", self.hd))
        t = {x.name: x for x in reader.tensors}

        def w(name):
            x = t[name]
            assert x.tensor_type == gguf.GGMLQuantizationType.F32, (name, x.tensor_type)
            # numpy shape is (ne1, ne0) = (out, in): y = W @ x
            return np.array(x.data, dtype=np.float64).reshape([int(d) for d in reversed(x.shape)])

        self.tok_embd = w("token_embd.weight")
        # Tied embeddings: a file without output.weight uses token_embd for the logits.
        self.out = w("output.weight") if "output.weight" in t else self.tok_embd
        self.out_norm = w("output_norm.weight")
        self.layers = []
        for l in range(self.n_layer):
            p = f"blk.{l}."
            self.layers.append({k: w(p + k + ".weight") for k in (
                "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")})
        self.vocab = self.tok_embd.shape[0]

    def rmsnorm(self, x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * g

    def rope(self, x, n_heads):
        # GGUF "llama" files store Q and K rows permuted so that rotation pairs are
        # adjacent dimensions (2i, 2i+1) of each head, frequency theta^(-2i/rope_dim).
        T = x.shape[0]
        x = x.reshape(T, n_heads, self.hd).copy()
        pos = np.arange(T, dtype=np.float64)[:, None]
        i = np.arange(self.rope_dim // 2, dtype=np.float64)[None, :]
        ang = pos * self.theta ** (-2.0 * i / self.rope_dim)  # (T, rope_dim/2)
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a = x[:, :, 0:self.rope_dim:2].copy()
        b = x[:, :, 1:self.rope_dim:2].copy()
        x[:, :, 0:self.rope_dim:2] = a * c - b * s
        x[:, :, 1:self.rope_dim:2] = a * s + b * c
        return x

    def logits(self, ids):
        """Logits (len(ids), vocab) at every position."""
        T = len(ids)
        x = self.tok_embd[np.array(ids)]
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        group = self.n_head // self.n_kv
        for L in self.layers:
            h = self.rmsnorm(x, L["attn_norm"])
            q = self.rope(h @ L["attn_q"].T, self.n_head)
            k = self.rope(h @ L["attn_k"].T, self.n_kv)
            v = (h @ L["attn_v"].T).reshape(T, self.n_kv, self.hd)
            att_out = np.empty((T, self.n_head, self.hd))
            for hh in range(self.n_head):
                kv = hh // group  # grouped-query attention: heads share KV heads in order
                sc = q[:, hh, :] @ k[:, kv, :].T / math.sqrt(self.hd) + mask
                sc = np.exp(sc - sc.max(axis=1, keepdims=True))
                sc /= sc.sum(axis=1, keepdims=True)
                att_out[:, hh, :] = sc @ v[:, kv, :]
            x = x + att_out.reshape(T, self.dim) @ L["attn_output"].T
            h = self.rmsnorm(x, L["ffn_norm"])
            g = h @ L["ffn_gate"].T
            u = h @ L["ffn_up"].T
            x = x + (g / (1.0 + np.exp(-g)) * u) @ L["ffn_down"].T
        x = self.rmsnorm(x, self.out_norm)
        return x @ self.out.T


def greedy(model, ids, n):
    """n greedy tokens (argmax, lowest id on ties) and the top-1 minus top-2 logit margin
    at each step (where margins are tiny a float32 engine may legitimately differ)."""
    ids = list(ids)
    out, margins = [], []
    for _ in range(n):
        lg = model.logits(ids)[-1]
        order = np.lexsort((np.arange(len(lg)), -lg))
        out.append(int(order[0]))
        margins.append(float(lg[order[0]] - lg[order[1]]))
        ids.append(int(order[0]))
    return out, margins


TOKENIZER_STRINGS = [
    "Hello world", "hello", " Hello", "  two leading spaces", "trailing space ",
    "a  b   c    d", "tab\tseparated", "new\nline", "\n\n", " ", "   ", "Once upon a time",
    "The little dog ran to the park.", "Lily's mom said, \"No!\"", "1234567890",
    "3.14 + 2 = 5.14?", "caf\u00e9", "na\u00efve fa\u00e7ade", "\u4f60\u597d\u4e16\u754c",
    "\u041f\u0440\u0438\u0432\u0435\u0442", "\U0001F600 smile", "emoji \U0001F436\U0001F431 pets",
    "\u2014 dash \u2026", "mixed \u00e9\U0001F600a", "<s> not a control token </s>",
    "<0x41> is text", "supercalifragilisticexpialidocious", "!!!???...",
    "They were happy. The end.", "x",
]

PROMPTS = [
    "Once upon a time",
    "The little dog",
    "Lily and Ben went to the park",
    "",
    "Tom saw a big \u00e9l\u00e9phant \U0001F418 in the garden",
    ("One day, a little girl named Lily found a needle in her room. She knew it was "
     "difficult to play with it because it was sharp. Lily wanted to share the needle "
     "with her mom, so she could sew a button on her shirt. She went to her mom and said"),
]

PPL_TEXT = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in "
    "the sunshine. One day, she saw a big, red ball in the park. She wanted to play with "
    "it, but it was too high up in a tree. Lily asked her friend Ben to help her. Ben was "
    "tall and strong. He climbed the tree and got the ball down. Lily was very happy. She "
    "said, \"Thank you, Ben! You are a good friend.\" They played with the ball all day "
    "long. When the sun went down, they went home to eat dinner with their moms and dads. "
    "Lily told her mom about the ball and her kind friend. Her mom smiled and gave her a "
    "big hug."
)

N_GREEDY = 48


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="/work/shared/models/stories260K.gguf")
    ap.add_argument("--out", default="tests/fixtures/stories260K.json")
    args = ap.parse_args()

    with open(args.model, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    reader = gguf.GGUFReader(args.model)
    tok = Tokenizer(reader)
    model = Llama(reader)

    tok_cases = []
    for s in TOKENIZER_STRINGS:
        ids = tok.encode(s.encode(), add_bos=False)
        assert tok.decode(ids) == s.encode(), (s, ids)
        tok_cases.append({"text": s, "ids": ids})

    prompts = []
    for p in PROMPTS:
        ids = tok.encode(p.encode(), add_bos=True)
        cont, margins = greedy(model, ids, N_GREEDY)
        # The continuation's text as it follows the prompt (its first space is kept).
        text = tok.decode(ids + cont)[len(tok.decode(ids)):].decode("utf-8", errors="replace")
        print(f"--- {p!r}\n{tok.decode(ids).decode()}|{text}\n", file=sys.stderr)
        prompts.append({"text": p, "ids": ids, "greedy": cont,
                        "greedy_text": text, "margins": [round(m, 6) for m in margins]})

    ppl_ids = tok.encode(PPL_TEXT.encode(), add_bos=True)
    lg = model.logits(ppl_ids)
    lse = np.log(np.exp(lg - lg.max(axis=1, keepdims=True)).sum(axis=1)) + lg.max(axis=1)
    nll = [float(lse[i - 1] - lg[i - 1, ppl_ids[i]]) for i in range(1, len(ppl_ids))]
    mean_nll = sum(nll) / len(nll)
    print(f"perplexity over {len(nll)} predicted tokens: {math.exp(mean_nll):.6f}", file=sys.stderr)

    lp = prompts[2]["ids"]
    all_logits = model.logits(lp)
    positions = [0, len(lp) // 2, len(lp) - 1]

    fixture = {
        "about": ("Made by tools/reference/llama_reference.py (independent numpy float64 "
                  "reference); do not edit by hand."),
        "model": {"file": "stories260K.gguf", "sha256": sha},
        "made_with": {"python": platform.python_version(), "numpy": np.__version__,
                      "gguf": version("gguf")},
        "tokenizer": {
            "bos": tok.bos, "eos": tok.eos, "unk": tok.unk, "add_bos": tok.add_bos,
            "add_space_prefix": tok.add_space_prefix,
            "about": "ids are without BOS; decode(ids) gives text back exactly",
            "cases": tok_cases,
        },
        "greedy": {
            "about": ("ids: prompt with BOS; greedy: the next n tokens by argmax (lowest id "
                      "on ties), recomputed from scratch each step; margins: top-1 minus "
                      "top-2 logit at each greedy step"),
            "n": N_GREEDY,
            "prompts": prompts,
        },
        "perplexity": {
            "about": ("ids = [BOS] + encode(text). For i = 1..len(ids)-1, nll_i = "
                      "-log softmax(logits at position i-1)[ids[i]] (natural log); "
                      "mean_nll = mean of nll_i over the len(ids)-1 predicted tokens; "
                      "ppl = exp(mean_nll). One forward over the whole sequence."),
            "text": PPL_TEXT,
            "ids": ppl_ids,
            "n_predicted": len(nll),
            "mean_nll": round(mean_nll, 9),
            "ppl": round(math.exp(mean_nll), 9),
        },
        "logits": {
            "about": ("full logits (vocab floats) of one forward over prompt ids at the "
                      "given positions (0-based; position p has seen ids[0..p])"),
            "prompt": prompts[2]["text"],
            "ids": lp,
            "positions": positions,
            "values": [[float(f"{v:.7g}") for v in all_logits[p]] for p in positions],
        },
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
