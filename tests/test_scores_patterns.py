"""Retrieval and induction scores against hand-written loops over TransformerLens's own cache."""

from __future__ import annotations

import torch

from workbench.scores import induction_scores, retrieval_scores
from workbench.scores.induction import repeated_random_tokens
from workbench.scores.retrieval import haystack_trials


def cached_patterns(lens, tokens):
    _, cache = lens.bridge.run_with_cache(tokens, names_filter=lambda name: name.endswith("hook_pattern"))
    return [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(lens.n_layers)]  # [batch, head, q, k]


def test_induction_score_is_mean_attention_to_the_token_after_the_first_occurrence(tiny):
    scores = induction_scores(tiny, n_sequences=3, length=12, seed=4)
    tokens, start = repeated_random_tokens(tiny, 3, 12, 4)
    patterns = cached_patterns(tiny, tokens)
    expected = torch.zeros(tiny.n_layers, tiny.n_heads, dtype=torch.float64)
    count = 0
    for batch in range(3):
        for i in range(11):
            query, key = start + 12 + i, start + i + 1
            assert tokens[batch, query] == tokens[batch, key - 1]
            count += 1
            for layer in range(tiny.n_layers):
                expected[layer] += patterns[layer][batch, :, query, key].double()
    torch.testing.assert_close(scores, expected / count)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_retrieval_score_counts_top_attention_on_the_copied_needle_token(tiny):
    scores = retrieval_scores(tiny, n_trials=3, haystack_len=30, needle_len=4, seed=2)
    trials = haystack_trials(tiny, 3, 30, 4, 2)
    expected = torch.zeros(tiny.n_layers, tiny.n_heads, dtype=torch.float64)
    for trial in trials:
        tokens = trial.tokens.tolist()
        assert tokens[-4:] == tokens[trial.needle_start : trial.needle_start + 4] == trial.needle.tolist()
        patterns = cached_patterns(tiny, trial.tokens[None])
        for step in range(4):
            query = len(tokens) - 4 - 1 + step
            for layer in range(tiny.n_layers):
                for head in range(tiny.n_heads):
                    top = int(patterns[layer][0, head, query].argmax())
                    inside = trial.needle_start <= top < trial.needle_start + 4
                    expected[layer, head] += float(inside and tokens[top] == tokens[query + 1])
    torch.testing.assert_close(scores, expected / 12)
    assert len({len(t.tokens) for t in trials}) == 1 and len({t.needle_start for t in trials}) > 1


def test_an_exact_induction_circuit_is_found(tiny):
    """Sanity: a head whose scores are forced onto the induction offset scores 1."""
    length = 10

    def force(pattern, hook):
        forced = torch.zeros_like(pattern)
        forced[..., :, 0] = 1.0
        start = pattern.shape[-1] - 2 * length
        for i in range(length - 1):
            forced[:, 1, start + length + i, :] = 0
            forced[:, 1, start + length + i, start + i + 1] = 1.0
        return forced

    with tiny.intervene(None, [("blocks.2.attn.hook_pattern", force)]):
        scores = induction_scores(tiny, n_sequences=2, length=length)
    assert scores[2, 1] == 1.0 and scores[2, 0] == 0.0
