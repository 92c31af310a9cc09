"""Unit tests for models.scorer's length-aware blocks, on a tiny hand-built ONNX graph and a tiny
word-level tokenizer: a block comes back in the order given, each item scored as it is alone,
short items padded only to their own group's length, and `score_blocks` scores blocks in order
while it tokenises ahead. Token ids, tokenised from a cut head of each text, are what the base
encoder's own BERT tokenizer gives for the whole text."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from tokenizers import Tokenizer, models, pre_tokenizers

from models.base import base_model
from models.scorer import (
    AHEAD_MAX,
    AHEAD_MAX_CHARS,
    CUT_CHARS_PER_TOKEN,
    TOKENIZER_FILE,
    Scorer,
    ScorerError,
    encode_texts,
    length_groups,
    load_tokenizer,
    token_ids,
)

WORDS = ["[PAD]", "[UNK]", *(f"w{k}" for k in range(40))]


def _graph(path: Path) -> Path:
    """logits = (sum of ids, length); embedding = (length, sum of ids, padded width)."""
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "m"], ["xm"]),
        helper.make_node("ReduceSum", ["xm", "axis1"], ["s"], keepdims=1),
        helper.make_node("ReduceSum", ["m", "axis1"], ["c"], keepdims=1),
        helper.make_node("Shape", ["input_ids"], ["shape"]),
        helper.make_node("Slice", ["shape", "one", "two"], ["width_i"]),
        helper.make_node("Cast", ["width_i"], ["width_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["c", "zero"], ["c0"]),
        helper.make_node("Add", ["c0", "width_f"], ["width"]),
        helper.make_node("Mul", ["s", "tenth"], ["s10"]),
        helper.make_node("Concat", ["s10", "c"], ["logits"], axis=1),
        helper.make_node("Concat", ["c", "s", "width"], ["embedding"], axis=1),
    ]
    consts = [
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("two", TensorProto.INT64, [1], [2]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("tenth", TensorProto.FLOAT, [], [0.1]),
    ]
    ints = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask")
    ]
    outs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2]),
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3]),
    ]
    graph = helper.make_graph(nodes, "tiny", ints, outs, initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def scorer_parts(tmp_path: Path) -> tuple[Path, Path]:
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    return _graph(tmp_path / "tiny.onnx"), tmp_path / "tokenizer.json"


def _text(n: int, start: int = 2) -> str:
    return " ".join(f"w{(start + k) % 40}" for k in range(n))


BLOCK = [_text(30, 1), _text(2, 5), _text(31, 7), _text(3, 9), _text(1, 3), _text(29)]


def test_length_groups_cover_every_item_once_shortest_first() -> None:
    lengths = [30, 2, 31, 3, 1, 29, 2, 30]
    groups = length_groups(lengths, overhead_tokens=8)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [sorted(lengths[i] for i in g) for g in groups] == [[1, 2, 2, 3], [29, 30, 30, 31]]
    assert len(length_groups(lengths, overhead_tokens=10_000)) == 1
    for group in length_groups(lengths, overhead_tokens=0):  # free runs: no padding at all
        assert len({lengths[i] for i in group}) == 1
    assert length_groups([], overhead_tokens=8) == []


def test_a_block_comes_back_in_order_each_item_as_scored_alone(scorer_parts) -> None:  # type: ignore[no-untyped-def]
    onnx_path, tokenizer = scorer_parts
    scorer = Scorer(
        onnx_path, tokenizer, ["benign", "violating"], max_length=64, group_overhead_tokens=8
    )
    block = scorer.score(BLOCK)
    alone = [scorer.score([text]) for text in BLOCK]
    np.testing.assert_allclose(
        block.probabilities, np.vstack([a.probabilities for a in alone]), rtol=1e-6
    )
    lengths = [len(t.split()) for t in BLOCK]
    np.testing.assert_array_equal(block.embeddings[:, 0], lengths)
    np.testing.assert_array_equal(block.embeddings[:, 1], [a.embeddings[0, 1] for a in alone])
    # short items are padded to their own group's longest (3 tokens), not the block's (31)
    widths = block.embeddings[:, 2]
    assert [int(w) for w, n in zip(widths, lengths, strict=True) if n <= 3] == [3, 3, 3]
    assert [int(w) for w, n in zip(widths, lengths, strict=True) if n > 3] == [31, 31, 31]
    one_group = Scorer(onnx_path, tokenizer, ["b", "v"], group_overhead_tokens=10_000)
    assert set(one_group.score(BLOCK).embeddings[:, 2].tolist()) == {31.0}
    np.testing.assert_allclose(one_group.score(BLOCK).probabilities, block.probabilities)


def test_score_blocks_scores_each_block_in_order(scorer_parts) -> None:  # type: ignore[no-untyped-def]
    onnx_path, tokenizer = scorer_parts
    scorer = Scorer(onnx_path, tokenizer, ["benign", "violating"], adapter_version="base")
    blocks = [BLOCK[:2], BLOCK[2:5], [], BLOCK[5:]]
    got = list(scorer.score_blocks(iter(blocks)))
    assert [len(b) for b in got] == [2, 3, 0, 1]
    for block, batch in zip(blocks, got, strict=True):
        np.testing.assert_array_equal(batch.probabilities, scorer.score(block).probabilities)
        assert batch.adapter_id == "base"
    assert list(scorer.score_blocks([])) == []
    with pytest.raises(ScorerError, match="'nope' is not loaded"):
        list(scorer.score_blocks(blocks, adapter_id="nope"))
    empty = scorer.score([])
    assert empty.probabilities.shape == (0, 2) and len(empty) == 0


def _bert_tokenizer(max_length: int) -> Tokenizer:
    """The base encoder's own tokenizer (BERT normaliser and pre-tokenizer, WordPiece), from the
    installed package: what model init copies next to the graph."""
    return load_tokenizer(base_model().path / TOKENIZER_FILE, max_length)


def _hostile_texts() -> list[str]:
    rng = random.Random(7)
    words = ["Free", "OFFER!!!", "naïve", "ÉLAN", "日本語テキスト", "http://x.example/a?b=c&utm=1"]
    words += ["a" * 150, "tab\tseparated", "crlf\r\nline", "\x00ctrl\x07", "emoji🙂", "don't"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 600))) for _ in range(150)]
    texts += ["x" * 5_000, "word " * 2_000, " " * 3_000 + "late words only", ""]
    texts += ["w" * 1_023 + " tail", "ab " * 341 + "c" * 40 + " end", "\n" * 1_100 + "text"]
    return texts


@pytest.mark.parametrize("max_length", [16, 128])
def test_token_ids_are_what_the_whole_text_gives_without_tokenising_all_of_it(
    max_length: int,
) -> None:
    """The cut before tokenising changes no id: texts longer than the cut, cut inside a long
    word, all-whitespace heads (the fallback), CJK, accents, control characters, CR/LF."""
    tokenizer = _bert_tokenizer(max_length)
    texts = _hostile_texts()
    encodings = tokenizer.encode_batch(texts)  # padded to the longest, truncated
    assert token_ids(tokenizer, texts) == [
        [i for i, m in zip(e.ids, e.attention_mask, strict=True) if m] for e in encodings
    ]
    enc = encode_texts(tokenizer, texts)
    assert enc["input_ids"].tolist() == [e.ids for e in encodings]
    assert enc["attention_mask"].tolist() == [e.attention_mask for e in encodings]
    assert sum(len(t) > CUT_CHARS_PER_TOKEN * max_length for t in texts) > 100  # cuts were made


def test_texts_tokenised_ahead_are_scored_as_if_tokenised_with_their_block(scorer_parts) -> None:  # type: ignore[no-untyped-def]
    onnx_path, tokenizer = scorer_parts
    scorer = Scorer(onnx_path, tokenizer, ["benign", "violating"], group_overhead_tokens=8)
    expected = scorer.score(BLOCK)
    scorer.pretokenise(BLOCK[:4])
    got = scorer.score(BLOCK)
    assert scorer.ahead_hits == 4  # each taken once ...
    np.testing.assert_array_equal(got.probabilities, expected.probabilities)
    np.testing.assert_array_equal(got.embeddings, expected.embeddings)
    scorer.score(BLOCK)
    assert scorer.ahead_hits == 4  # ... and gone
    many = [_text(1 + k // 40, k) for k in range(AHEAD_MAX + 10)]  # all distinct
    scorer.pretokenise(many)
    assert len(scorer._ahead) == AHEAD_MAX  # the oldest dropped first
    assert many[9] not in scorer._ahead and many[10] in scorer._ahead and many[-1] in scorer._ahead
    long = "w1 " * (AHEAD_MAX_CHARS // 3 + 1)
    scorer.pretokenise([long])
    assert long not in scorer._ahead  # over the size kept ahead: tokenised with its block
    np.testing.assert_array_equal(
        scorer.score([long]).probabilities, scorer.score([long]).probabilities
    )
