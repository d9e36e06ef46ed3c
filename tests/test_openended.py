"""Open-ended evaluation (steered generation + judge + perplexity guard) and knowledge preservation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from interp_steer.chat import chat_tokens
from interp_steer.data.schemas import MCQItem
from interp_steer.errors import InterpSteerError
from interp_steer.evaluation.openended import open_ended_eval, response_perplexity, token_nll
from interp_steer.evaluation.preservation import (
    KNOWLEDGE_PATH,
    KNOWLEDGE_TOPICS,
    default_texts,
    heldout_texts,
    knowledge_preservation,
    knowledge_preservation_sweep,
    load_knowledge,
    preservation_baseline,
    text_perplexity,
)
from interp_steer.generation import generate
from interp_steer.models import model_fingerprint
from interp_steer.steering.vector import SteeringVector

from .conftest import TINY_HOOK

PROMPTS = ["What is the capital of a small town?", "Tell me about cats.", "Count to three.", "Hi"]


def _dense(model, norm: float, seed: int = 1, hook: str = TINY_HOOK) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(model.cfg.d_model, generator=g)
    return SteeringVector("test", "dense", {hook: {"vector": v / v.norm() * norm}},
                          model_fingerprint(model).to_dict())


def _direct_nll(model, ids: list[int], start: int) -> tuple[float, int]:
    """Reference: one unpadded sequence, summed −log p of tokens ``start:``."""
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0].double()
    logp = torch.log_softmax(logits, -1)
    nll = -sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))
    return nll, len(ids) - start


# ------------------------------------------------------------------------------------------ perplexity


def test_response_perplexity_is_exp_of_mean_nll_computed_directly(tiny_model):
    tok = tiny_model.tokenizer
    responses = ["Paris is lovely in spring.", "Cats sleep a lot, often sixteen hours a day, and purr.", "1, 2, 3.",
                 "Hello! How can I help you today?"]
    res = response_perplexity(tiny_model, PROMPTS, responses, batch_size=3)  # mixed lengths, padded batches
    total, count, per_item = 0.0, 0, []
    for prompt, response in zip(PROMPTS, responses, strict=True):
        ct = chat_tokens(tok, prompt, response, end_of_turn=False)
        assert tok.decode(ct.response_ids) == response  # response tokens only, no end-of-turn marker
        nll, n = _direct_nll(tiny_model, ct.ids, ct.response_start)
        total, count = total + nll, count + n
        per_item.append(nll / n)
    assert res.n_tokens == count and res.n_sequences == 4
    assert res.mean_nll == pytest.approx(total / count, rel=1e-5)
    assert res.perplexity == pytest.approx(math.exp(total / count), rel=1e-4)
    assert res.per_sequence_nll == pytest.approx(per_item, rel=1e-5)


def test_empty_responses_contribute_no_tokens(tiny_model):
    res = response_perplexity(tiny_model, ["Hi", "Hello"], ["", "Hello there."])
    assert res.per_sequence_nll[0] is None and res.per_sequence_nll[1] is not None
    with pytest.raises(InterpSteerError, match="no tokens"):
        response_perplexity(tiny_model, ["Hi"], ["  "])
    with pytest.raises(InterpSteerError, match="start index"):
        token_nll(tiny_model, [[1, 2, 3]], [0])


def test_steered_token_nll_uses_the_vector_and_strength_zero_is_exact(tiny_model):
    seqs = [[1, 300, 400, 500, 600], [1, 700, 800]]
    plain = token_nll(tiny_model, seqs, [1, 1])
    vec = _dense(tiny_model, 30.0)
    assert token_nll(tiny_model, seqs, [1, 1], vector=vec, strength=0.0) == plain
    steered = token_nll(tiny_model, seqs, [1, 1], vector=vec, strength=1.0)
    assert all(abs(a[0] - b[0]) > 1e-3 for a, b in zip(plain, steered, strict=True))


# ---------------------------------------------------------------------------------------- the sweep


def test_open_ended_eval_strength_zero_equals_unsteered_generation(tiny_model):
    vec = _dense(tiny_model, 40.0)
    calls = []

    def length_judge(prompts, outputs):
        calls.append(list(outputs))
        return [float(len(o)) if o else None for o in outputs]

    res = open_ended_eval(tiny_model, PROMPTS, vec, [0.0, 3.0], judge=length_judge, max_new_tokens=10,
                          batch_size=3)
    assert [r.strength for r in res] == [0.0, 3.0]
    assert all(len(r.samples) == len(PROMPTS) for r in res)
    plain = generate(tiny_model, PROMPTS, max_new_tokens=10, batch_size=3, return_tokens=True)
    assert [s["output"] for s in res[0].samples] == [g.text for g in plain]
    assert res[0].n_tokens == sum(len(g.tokens) for g in plain)
    steered = [s["output"] for s in res[1].samples]
    assert steered != [g.text for g in plain]
    # the judge saw exactly the outputs; None scores count as invalid, not as zero
    assert calls == [[g.text for g in plain], steered]
    for r in res:
        valid = [float(len(s["output"])) for s in r.samples if s["output"]]
        assert r.n_scored == len(valid) and r.n_invalid == len(PROMPTS) - len(valid)
        assert r.mean_score == pytest.approx(sum(valid) / len(valid))
        assert r.perplexity == pytest.approx(math.exp(r.mean_nll))
        assert r.to_dict()["samples"][0]["prompt"] == PROMPTS[0]
    # the fluency guard: greedy unsteered outputs are the unsteered model's most likely tokens, steered ones not
    assert res[1].perplexity > 2 * res[0].perplexity


def test_open_ended_perplexity_is_scored_on_the_generated_tokens(tiny_model):
    """The guard scores the very token ids that were generated (no re-tokenization of the text)."""
    vec = _dense(tiny_model, 40.0)
    (r,) = open_ended_eval(tiny_model, PROMPTS[:2], vec, [2.0], max_new_tokens=6)
    gens = generate(tiny_model, PROMPTS[:2], vec, 2.0, max_new_tokens=6, return_tokens=True)
    total, count = 0.0, 0
    for prompt, g in zip(PROMPTS[:2], gens, strict=True):
        ids = chat_tokens(tiny_model.tokenizer, prompt).prompt_ids
        nll, n = _direct_nll(tiny_model, ids + g.tokens, len(ids))
        total, count = total + nll, count + n
    assert r.n_tokens == count
    assert r.mean_nll == pytest.approx(total / count, rel=1e-5)


def test_open_ended_eval_passes_references_to_protocol_judges(tiny_model):
    class RecordingJudge:
        def __init__(self):
            self.seen = None

        def judge(self, prompts, outputs, chosen=None, rejected=None):
            self.seen = (list(prompts), list(chosen), list(rejected))
            return [1.0] * len(outputs)

    judge = RecordingJudge()
    (r,) = open_ended_eval(tiny_model, PROMPTS[:2], None, [0.0], judge=judge, chosen=["c1", "c2"], rejected="r",
                           max_new_tokens=3)
    assert judge.seen == (PROMPTS[:2], ["c1", "c2"], ["r", "r"])
    assert r.mean_score == 1.0 and r.n_invalid == 0
    with pytest.raises(InterpSteerError, match="3 chosen references for 2 prompts"):
        open_ended_eval(tiny_model, PROMPTS[:2], None, [0.0], judge=judge, chosen=["a", "b", "c"])
    with pytest.raises(InterpSteerError, match="returned 1 scores for 2 outputs"):
        open_ended_eval(tiny_model, PROMPTS[:2], None, [0.0], judge=lambda p, o: [1.0], max_new_tokens=2)


# ------------------------------------------------------------------------------- knowledge set + loader


def test_knowledge_set_is_well_formed():
    items = load_knowledge()
    assert 55 <= len(items) <= 70
    topics = {it.metadata["topic"] for it in items}
    assert topics == set(KNOWLEDGE_TOPICS)
    assert all(len(it.options) == 4 and len(set(it.options)) == 4 for it in items)
    counts = [sum(it.answer == k for it in items) for k in range(4)]
    assert max(counts) - min(counts) <= 2  # answer positions balanced
    assert len({it.metadata["id"] for it in items}) == len(items)
    assert len({it.question for it in items}) == len(items)
    arithmetic = load_knowledge(topics="arithmetic")
    assert {it.metadata["topic"] for it in arithmetic} == {"arithmetic"}
    # the arithmetic answers are right (checked by evaluating the expression where there is one)
    for it in arithmetic:
        expr = it.question.removeprefix("What is ").removesuffix("?").replace("×", "*").replace("÷", "/") \
            .replace("−", "-")
        if all(c in "0123456789+-*/. " for c in expr):
            assert float(it.options[it.answer]) == pytest.approx(eval(expr))  # noqa: S307 (digits and operators)


def test_load_knowledge_reports_malformed_lines(tmp_path):
    path = tmp_path / "k.jsonl"
    rows = [
        {"id": "a", "topic": "t", "question": "Q?", "options": ["x", "y"], "answer": 1},
        {"id": "b", "topic": "t", "question": "Q?", "options": ["x", "y"], "answer": 2},
        {"id": "c", "topic": "t", "question": "Q?", "options": ["x"]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    with pytest.raises(InterpSteerError, match=r"3 malformed row\(s\) at lines 2, 3, 4"):
        load_knowledge(path)
    path.write_text(json.dumps(rows[0]) + "\n")
    assert load_knowledge(path)[0].options == ["x", "y"]
    with pytest.raises(InterpSteerError, match="unknown knowledge topic"):
        load_knowledge(path, topics=["science"])
    assert KNOWLEDGE_PATH.is_file()


# ------------------------------------------------------------------------------------- preservation


def _own_greedy_text(model, n_tokens: int = 24) -> str:
    """A text the unsteered tiny model predicts well: greedy decoding restricted to whole-word tokens
    (leading space, letters only) so that the decoded text tokenizes back to the same ids."""
    tok = model.tokenizer
    vocab = tok.get_vocab()
    allowed = torch.zeros(model.cfg.d_vocab, dtype=torch.bool)
    for piece, idx in vocab.items():
        word = tok.convert_tokens_to_string([piece])
        if idx < model.cfg.d_vocab and word.startswith(" ") and word[1:].isalpha() and word[1:].isascii():
            allowed[idx] = True
    ids = [tok.bos_token_id]
    with torch.no_grad():
        for _ in range(n_tokens):
            logits = model(torch.tensor([ids]))[0, -1]
            ids.append(int(logits.masked_fill(~allowed, -math.inf).argmax()))
    text = tok.decode(ids[1:])
    assert tok(text, add_special_tokens=False)["input_ids"] == ids[1:]  # round trip holds
    return text


def test_knowledge_preservation_strength_zero_is_exactly_zero_shift(tiny_model):
    vec = _dense(tiny_model, 50.0)
    items = load_knowledge()[:6]
    texts = ["The sun rises in the east.", "Water boils at one hundred degrees.", "Seven plus five is twelve."]
    rep = knowledge_preservation(tiny_model, vec, 0.0, texts=texts, mcq=items)
    assert rep.perplexity_shift == 0.0 and rep.nll_shift == 0.0 and rep.accuracy_shift == 0.0 and rep.perplexity_ratio == 1.0
    assert rep.margin_shift == 0.0
    assert rep.answers_changed == 0 and rep.n_items == 6 and rep.n_texts == 3
    assert rep.accuracy_by_topic_steered == rep.accuracy_by_topic_unsteered
    assert rep.texts_source == "given texts"


def test_large_random_vector_increases_perplexity_on_the_tiny_model(tiny_model):
    texts = [_own_greedy_text(tiny_model)]
    base = text_perplexity(tiny_model, texts)
    vec = _dense(tiny_model, 60.0, seed=3)
    items = [MCQItem("What is 7 + 5?", ["11", "12", "13", "14"], 1, metadata={"topic": "arithmetic"})]
    rep = knowledge_preservation(tiny_model, vec, 1.0, texts=texts, mcq=items)
    assert rep.perplexity_unsteered == pytest.approx(base.perplexity)
    assert rep.perplexity_steered > 3 * rep.perplexity_unsteered and rep.nll_shift > 1.0
    assert rep.perplexity_ratio == pytest.approx(rep.perplexity_steered / rep.perplexity_unsteered)
    # a sweep reuses one baseline and agrees with the single calls
    sweep = knowledge_preservation_sweep(tiny_model, vec, [0.0, 1.0], texts=texts, mcq=items)
    assert sweep[0].perplexity_shift == 0.0 and sweep[1].perplexity_steered == pytest.approx(rep.perplexity_steered)
    # the text check is steered at every position: direct computation with the hooks agrees
    from interp_steer.steering.interventions import steer

    seq = [tiny_model.tokenizer.bos_token_id] + tiny_model.tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    with steer(tiny_model, vec, 1.0):
        nll, n = _direct_nll(tiny_model, seq, 1)
    assert rep.perplexity_steered == pytest.approx(math.exp(nll / n), rel=1e-4)


def test_heldout_texts_sources(tiny_model):
    texts, source = heldout_texts(tiny_model.tokenizer, max_documents=5)
    assert len(texts) == 5 and all(t.strip() for t in texts)
    assert source in ("mixed-text.jsonl.gz held-out split", "knowledge_mini statements")
    with pytest.raises(InterpSteerError, match="neither a file nor a registry key"):
        heldout_texts(source="no-such-key")
    # default_texts: a seeded sample of the same pool, reproducible, different for another seed
    a, b, c = default_texts(6, seed=0), default_texts(6, seed=0), default_texts(6, seed=1)
    pool, _ = heldout_texts(None, max_documents=None)
    assert a == b and a != c and len(a) == 6 and set(a) <= set(pool)


def test_heldout_texts_are_the_sae_heldout_split(tiny_model):
    from interp_steer.data.corpus import load_corpus, split_corpus

    from .conftest import shared_data

    path = shared_data("corpus", "mixed-text.jsonl.gz")
    texts, source = heldout_texts(None, max_documents=None, source=path)
    all_docs = load_corpus(path)
    train, held = split_corpus(all_docs, heldout_fraction=0.05, seed=0)
    assert texts == held
    # the corpus repeats a few documents verbatim (139 of 14,825), so a few held-out texts also occur in train
    assert len(set(texts) & set(train)) < 0.05 * len(texts)
    assert 0.04 < len(held) / len(all_docs) < 0.06


# ---------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_real_model_preservation_with_a_strong_random_vector(model):
    """A large random vector at layer 15 costs held-out perplexity and the correct options' margin; a small
    one costs little. (20 questions keep the test short; the full-set baseline is in the README.)"""
    items = load_knowledge()[::3]
    big = _dense(model, 200.0, seed=0, hook="blocks.15.hook_resid_post")
    small = _dense(model, 2.0, seed=0, hook="blocks.15.hook_resid_post")
    base = preservation_baseline(model, mcq=items, max_texts=6, max_tokens=128)
    (rep_big,) = knowledge_preservation_sweep(model, big, [1.0], baseline=base, max_tokens=128)
    rep_small = knowledge_preservation(model, small, 1.0, baseline=base, max_tokens=128)
    print(json.dumps(rep_big.to_dict(), indent=1), json.dumps(rep_small.to_dict(), indent=1))
    assert rep_big.perplexity_unsteered == pytest.approx(rep_small.perplexity_unsteered)
    assert rep_big.perplexity_ratio > 2.0 and rep_big.margin_shift < 0
    assert abs(rep_small.nll_shift) < 0.1 * rep_big.nll_shift


@pytest.mark.slow
def test_real_model_open_ended_with_embedding_judge(model):
    """A CAA culture vector (Egypt, 16 pairs) judged by the embedding judge against the culture answers."""
    from interp_steer.data import culture_preferences, load_culture
    from interp_steer.evaluation.judges import EmbeddingJudge
    from interp_steer.methods.caa import compute_caa

    pairs = culture_preferences(countries="egypt", split="train", form="open_ended", on_policy=False)[:16]
    vec = compute_caa(model, pairs, layers=12, normalize_to="mean_resid")[12]
    items = load_culture(countries="egypt", localization="nolocalized", split="test")[:4]
    prompts = [it.question for it in items]
    chosen = [it.metadata["chosen_open_ended"] for it in items]
    rejected = [f"{it.options[(it.answer + 1) % 4]} is the usual choice." for it in items]
    res = open_ended_eval(model, prompts, vec, [0.0, 1.0], judge=EmbeddingJudge(), chosen=chosen,
                          rejected=rejected, max_new_tokens=32)
    for r in res:
        print(r.strength, r.mean_score, r.perplexity, [s["output"][:80] for s in r.samples])
    assert all(r.n_scored == 4 and r.perplexity is not None and math.isfinite(r.perplexity) for r in res)
    assert [s["output"] for s in res[0].samples] == generate(model, prompts, max_new_tokens=32)
    # λ = 1 with a mean-residual-norm CAA vector is far past the fluency bound here: measured 2026-12-03, response
    # perplexity 3.04 → 30.0 (word lists, "golden mochi ..."), judge score 0.260 → 0.099; re-measured on the
    # 612-stem set (2026-12-04): 3.15 → 25.3 ("mochi. lamp. lamp."), judge 0.233 → 0.036. The judge must not
    # reward degenerate text: its score falls with the collapse (margin 0.15 below the measured 0.20 drop). The
    # pairs keep the template rejected (on_policy=False): the vector from on-policy pairs collapses into
    # "jjjjjj" repetition, which the unsteered model finds predictable (response perplexity only ×2.5 at λ = 1,
    # ×1.8 at λ = 2, judge 0.233 → -0.05 / -0.10), so the perplexity precondition would not identify it. This
    # is a check of the judge; a steering gain at a fluent strength is the efficacy benchmark's claim, not this
    # 4-item test's.
    assert res[1].perplexity > 3 * res[0].perplexity
    assert res[1].mean_score < res[0].mean_score - 0.05, (res[0].mean_score, res[1].mean_score)


def test_summarised_perplexity_is_token_weighted_and_overflows_to_inf():
    from interp_steer.evaluation.calibration import _perplexity
    from interp_steer.evaluation.openended import _summarise

    res = _summarise([(2.0, 2), (4.0, 2), (0.0, 0)])
    assert res.perplexity == pytest.approx(math.exp(1.5)) and res.n_tokens == 4 and res.n_sequences == 3
    assert res.per_sequence_nll == [1.0, 2.0, None]
    huge = [(800.0 * 3, 3)]  # exp(800) overflows a float
    assert _summarise(huge).perplexity == math.inf and _perplexity(huge) == math.inf
    assert _summarise([(float("inf"), 2)]).perplexity == math.inf
    with pytest.raises(InterpSteerError, match="no tokens"):
        _perplexity([(0.0, 0)])
