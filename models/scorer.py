"""The onnxruntime scorer: a block of texts in, probabilities (one per label) and pooled embeddings
out, in the order given. Tokenisation uses the `tokenizers` library (truncation); no torch. Within
a block, items are grouped by token length (`length_groups`) so each run pads to similar lengths.
``score`` is a plain blocking call: onnxruntime releases the GIL, so the stream runs it in an
executor and heartbeats and commits go on while a block is scored; `Scorer.score_blocks`
tokenises the next block on a second thread while the current one is scored.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from models.adapter_file import check_fits, read_adapter_file
from models.errors import BorderlineError
from models.manifest import ModelManifest

__all__ = [
    "ScoreBatch",
    "Scorer",
    "ScorerError",
    "encode_texts",
    "length_groups",
    "load_tokenizer",
    "softmax",
    "token_ids",
]

TOKENIZER_FILE = "tokenizer.json"

# What one more onnxruntime run costs, in padded tokens of work: the time of a 1 x 8 run of the
# fused int8 MiniLM over the time one more token adds to a 16-item block ((16x128 - 16x64) /
# 1024). Measured on 2 shared cores (load 9-10): 13, 18 and 24 tokens in three runs (a 16 x 128
# run 2.5-3.2 s there; a 4 x 128 run costs a quarter of it: small groups lose nothing per token).
# A block is split only where the padding saved is worth more than that.
GROUP_OVERHEAD_TOKENS = 32


AHEAD_MAX = 256
"""Texts tokenised ahead (`Scorer.pretokenise`) kept for `Scorer.encode`, at most; the oldest go
first. A worker's next batch is `batch_max_size` items (16 by default)."""
AHEAD_MAX_CHARS = 16_384
"""Longer texts are not kept ahead (the key is the text itself): at most 4 MB held."""


class ScorerError(BorderlineError):
    """The scorer cannot be built from the given model folder."""


def load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The tokenizer as training, export and scoring all use it: truncation to ``max_length``,
    padding to the longest item of each batch."""
    if not path.is_file():
        raise ScorerError(f"tokenizer not found: {path}")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tokenizer


CUT_CHARS_PER_TOKEN = 8
"""A text is tokenised from its first ``CUT_CHARS_PER_TOKEN x max_length`` characters (cut at a
whitespace), since only its first ``max_length`` tokens are kept. Measured on the SpamAssassin
corpus (6,046 texts, median 1,024 characters, 10% over 3,424, the longest 163,533; 128 tokens):
the whole texts tokenise in 3.46 s, cut at 512 / 1,024 / 2,048 characters in 0.81 / 1.54 /
2.24 s, with 1,734 / 1 / 0 texts too short after the cut (tokenised whole again). A block of 16
took 10.3 ms (p50) to tokenise against 182 ms to score: 5.8% of the worker's scoring step."""

_WHITESPACE = (" ", "\n", "\t", "\r")  # whitespace to BERT's pre-tokenizer: a word ends there


def _head(text: str, chars: int) -> str:
    """``text`` up to its last whitespace before ``chars`` characters; whole when it is no longer,
    or when it has no whitespace to cut at.

    >>> _head("one two three", 9), _head("one two", 9), _head("onetwothree", 9)
    ('one two', 'one two', 'onetwothree')
    """
    if len(text) <= chars:
        return text
    cut = max(text.rfind(w, 0, chars) for w in _WHITESPACE)
    return text[:cut] if cut > 0 else text


def token_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids (special tokens included, truncated to the tokenizer's
    ``max_length``, no padding), exactly as ``tokenizer.encode_batch`` gives them, without
    tokenising what truncation throws away: a text is cut at a whitespace before
    `CUT_CHARS_PER_TOKEN` x ``max_length`` characters, and tokenised whole only when the cut
    left fewer than ``max_length`` tokens. The cut gives the same first tokens as the whole text:
    BERT's normaliser works per character and its pre-tokenizer ends a word at whitespace."""
    truncation = tokenizer.truncation
    if truncation is None:
        return [_unpadded(e) for e in tokenizer.encode_batch(list(texts))]
    max_length = int(truncation["max_length"])
    heads = [_head(t, CUT_CHARS_PER_TOKEN * max_length) for t in texts]
    ids = [_unpadded(e) for e in tokenizer.encode_batch(heads)]
    short = [
        i
        for i, (t, h) in enumerate(zip(texts, heads, strict=True))
        if len(h) < len(t) and len(ids[i]) < max_length
    ]
    if short:
        again = tokenizer.encode_batch([texts[i] for i in short])
        for i, e in zip(short, again, strict=True):
            ids[i] = _unpadded(e)
    return ids


def _unpadded(encoding: Encoding) -> list[int]:
    """An encoding's ids without its padding (if the tokenizer pads: right, after the mask)."""
    return list(encoding.ids[: sum(encoding.attention_mask)])


def _pad_id(tokenizer: Tokenizer) -> int:
    padding = tokenizer.padding
    if padding:
        return int(padding["pad_id"])
    pad = tokenizer.token_to_id("[PAD]")
    return 0 if pad is None else int(pad)


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Model inputs for ``texts``: `token_ids` padded to the longest of them."""
    ids = token_ids(tokenizer, texts)
    return _Encoded(ids, []).padded(list(range(len(ids))), _pad_id(tokenizer))


def length_groups(lengths: Sequence[int], overhead_tokens: int) -> list[list[int]]:
    """Indices of a block grouped by token length: sorted by length, then cut into the groups
    that minimise the total work, counting a group as ``overhead_tokens`` plus its size times its
    longest item (what it pads to). Exact (dynamic programming over the cuts).

    >>> length_groups([128, 9, 128, 11, 10], overhead_tokens=40)
    [[1, 4, 3], [0, 2]]
    >>> length_groups([128, 9, 128], overhead_tokens=400)
    [[1, 0, 2]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    n = len(order)
    best = [0] + [0] * n  # best[k]: least work for the k shortest items
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        options = (
            (best[start] + overhead_tokens + (end - start) * sizes[end - 1], start)
            for start in range(end)
        )
        best[end], cut[end] = min(options)
    groups: list[list[int]] = []
    end = n
    while end > 0:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


@dataclass(frozen=True)
class _Encoded:
    """A block tokenised (no padding yet) and grouped by length."""

    ids: list[list[int]]
    groups: list[list[int]]

    def padded(self, group: list[int], pad_id: int) -> dict[str, np.ndarray]:
        width = max((len(self.ids[i]) for i in group), default=0)
        ids = np.full((len(group), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(group), width), dtype=np.int64)
        for row, i in enumerate(group):
            ids[row, : len(self.ids[i])] = self.ids[i]
            mask[row, : len(self.ids[i])] = 1
        return {"input_ids": ids, "attention_mask": mask}


@dataclass(frozen=True)
class ScoreBatch:
    probabilities: np.ndarray  # (n, labels) float32, rows sum to 1
    embeddings: np.ndarray  # (n, hidden) float32, L2-normalised
    labels: tuple[str, ...]
    adapter_id: str = "none"  # the adapter that produced these scores

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    def category_probabilities(self, row: int) -> dict[str, float]:
        """Probability per policy category (labels[0], benign, is left out)."""
        return {
            label: round(float(self.probabilities[row, j]), 6)
            for j, label in enumerate(self.labels)
            if j > 0
        }

    def violating(self) -> np.ndarray:
        """Probability that each item violates any category (1 - P(benign))."""
        return np.asarray(1.0 - self.probabilities[:, 0], dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True), dtype=np.float32)


@dataclass(frozen=True)
class _Loaded:
    adapter_id: str
    run_options: ort.RunOptions | None
    adapter: ort.LoraAdapter | None  # kept alive as long as its run options are used


class Scorer:
    """One onnxruntime session and one tokenizer, and any number of loaded LoRA adapters of which
    one is active. Thread-safe: ``score`` reads the active adapter once per block, and
    ``activate`` replaces that reference atomically, so a swap happens between blocks; the
    previously active adapter stays loaded, so going back is instant."""

    def __init__(
        self,
        onnx_path: Path,
        tokenizer_path: Path,
        labels: Sequence[str],
        *,
        max_length: int = 128,
        threads: int = 0,
        model_version: str = "unversioned",
        adapter_version: str = "none",
        group_overhead_tokens: int = GROUP_OVERHEAD_TOKENS,
    ) -> None:
        """``threads``: onnxruntime's intra-op threads (0: one per core). ``group_overhead_tokens``:
        the cost of one more run in tokens (see `length_groups`); a huge value never splits."""
        if not onnx_path.is_file():
            raise ScorerError(f"ONNX model not found: {onnx_path}")
        options = ort.SessionOptions()
        # Thread settings, measured (fused int8, blocks of 16 corpus texts, separate processes
        # alternated, 2 cores shared with other jobs at load 9-10): intra-op threads 2 / 1 with
        # the pool's spin-wait on 3.6, 3.7 / 3.3, 11.0, 4.5 items/s, spin-wait off 4.1, 4.6 /
        # 4.3, 9.5. Spinning threads burn the cores the event loop, the tokenizer and the
        # other processes need, and won nowhere: off. Intra-op threads: ``threads`` (0, the
        # default, one per core: 1 and 2 were within the noise above). Inter-op threads: 1,
        # the graph runs sequentially (ORT_SEQUENTIAL), so more would only idle.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # overridable initializers are intended: no warning each
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = load_tokenizer(tokenizer_path, max_length)
        self._pad_id = _pad_id(self.tokenizer)
        self.tokenizer.no_padding()  # each length group is padded on its own
        self.group_overhead_tokens = group_overhead_tokens
        self._ahead: OrderedDict[str, list[int]] = OrderedDict()  # text -> ids, tokenised ahead
        self._ahead_lock = threading.Lock()
        self.ahead_hits = 0  # texts whose ids `encode` found tokenised ahead
        self.labels = tuple(labels)
        self.max_length = max_length
        self.model_version = model_version
        self.overridable = {
            i.name: tuple(int(d) for d in i.shape)
            for i in self.session.get_overridable_initializers()
        }
        # the base's own initializer values are the adapter it was exported with
        self._adapters: dict[str, _Loaded] = {adapter_version: _Loaded(adapter_version, None, None)}
        self._active = self._adapters[adapter_version]
        self.base_adapter = adapter_version
        outputs = [o.name for o in self.session.get_outputs()]
        dim = self.session.get_outputs()[1].shape[-1]
        self.embedding_dim = int(dim) if isinstance(dim, int) else 384
        if outputs[:2] != ["logits", "embedding"]:
            raise ScorerError(f"{onnx_path} has outputs {outputs}, expected logits and embedding")

    @classmethod
    def from_dir(
        cls, model_dir: Path, *, max_length: int | None = None, threads: int = 0
    ) -> Scorer:
        """Build from a `model init` folder; the manifest's sha256s are verified first."""
        manifest = ModelManifest.read(model_dir)
        return cls(
            model_dir / manifest.onnx_file,
            model_dir / TOKENIZER_FILE,
            manifest.labels,
            max_length=max_length or manifest.max_length,
            threads=threads,
            model_version=manifest.model_version,
            adapter_version=manifest.adapter_version,
        )

    @property
    def adapter_version(self) -> str:
        return self._active.adapter_id

    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._adapters)

    def load_adapter(self, adapter_id: str, path: Path) -> None:
        """Load (memory-map) an adapter file after checking it fits this base."""
        if adapter_id in self._adapters:
            return
        check_fits(read_adapter_file(path), self.overridable)
        adapter = ort.LoraAdapter()
        adapter.Load(str(path))
        options = ort.RunOptions()
        options.add_active_adapter(adapter)
        self._adapters[adapter_id] = _Loaded(adapter_id, options, adapter)

    def activate(self, adapter_id: str) -> None:
        try:
            self._active = self._adapters[adapter_id]
        except KeyError:
            raise ScorerError(f"adapter {adapter_id!r} is not loaded") from None

    def unload(self, adapter_id: str) -> None:
        if adapter_id in (self._active.adapter_id, self.base_adapter):
            raise ScorerError(f"adapter {adapter_id!r} is active or the base's own: not unloaded")
        self._adapters.pop(adapter_id, None)

    def _loaded(self, adapter_id: str | None) -> _Loaded:
        loaded = self._active if adapter_id is None else self._adapters.get(adapter_id)
        if loaded is None:
            raise ScorerError(f"adapter {adapter_id!r} is not loaded")
        return loaded

    def pretokenise(self, texts: Sequence[str]) -> None:
        """Tokenise ``texts`` now, on the caller's thread, for a later `encode` of them: a worker
        tokenises its next batch as it arrives, while the scorer thread scores the current one.
        At most `AHEAD_MAX` texts are kept, the oldest dropped first (a text that never comes to
        be scored, a dead letter say, costs nothing but its place); a text over
        `AHEAD_MAX_CHARS` is left to `encode`."""
        texts = [t for t in texts if len(t) <= AHEAD_MAX_CHARS]
        ids = token_ids(self.tokenizer, texts)
        with self._ahead_lock:
            for text, one in zip(texts, ids, strict=True):
                self._ahead[text] = one
                self._ahead.move_to_end(text)
            while len(self._ahead) > AHEAD_MAX:
                self._ahead.popitem(last=False)

    def encode(self, texts: Sequence[str]) -> _Encoded:
        """Tokenise a block and group it by length (no onnxruntime: safe on another thread);
        texts tokenised ahead are taken as they were, each once."""
        with self._ahead_lock:
            found = [self._ahead.pop(t, None) if self._ahead else None for t in texts]
        missing = [k for k, one in enumerate(found) if one is None]
        fresh = iter(token_ids(self.tokenizer, [texts[k] for k in missing]) if missing else [])
        ids = [one if one is not None else next(fresh) for one in found]
        self.ahead_hits += len(texts) - len(missing)
        return _Encoded(ids, length_groups([len(i) for i in ids], self.group_overhead_tokens))

    def _run(self, encoded: _Encoded, loaded: _Loaded) -> ScoreBatch:
        n = len(encoded.ids)
        probabilities = np.zeros((n, len(self.labels)), dtype=np.float32)
        embeddings = np.zeros((n, self.embedding_dim if n else 0), dtype=np.float32)
        for group in encoded.groups:
            logits, embedding = self.session.run(
                ["logits", "embedding"],
                encoded.padded(group, self._pad_id),
                loaded.run_options,
            )
            probabilities[group] = softmax(logits)
            embeddings[group] = embedding
        return ScoreBatch(probabilities, embeddings, self.labels, loaded.adapter_id)

    def score(self, texts: Sequence[str], adapter_id: str | None = None) -> ScoreBatch:
        """Score a block with the active adapter, or with ``adapter_id`` (shadow scoring)."""
        loaded = self._loaded(adapter_id)
        return self._run(self.encode(texts), loaded)

    def score_blocks(
        self, blocks: Iterable[Sequence[str]], adapter_id: str | None = None
    ) -> Iterator[ScoreBatch]:
        """Score blocks in order, tokenising the next one on a second thread while the current
        one runs (onnxruntime releases the GIL). The adapter is read as each block starts."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenise") as pool:
            pending = iter(blocks)
            first = next(pending, None)
            if first is None:
                return
            ahead = pool.submit(self.encode, first)
            for block in pending:
                current, ahead = ahead.result(), pool.submit(self.encode, block)
                yield self._run(current, self._loaded(adapter_id))
            yield self._run(ahead.result(), self._loaded(adapter_id))
