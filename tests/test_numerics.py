"""Results at any thread count (docs/numerics.md): scores are bit-equal at 1, 2 and 3 torch threads
(attribution through `invariant_grad`), a scan resumed at another thread count equals one run,
decoding gives the same tokens with step scores within the documented bound, and an evaluation
that mixes thread counts records them and says so."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
import torch

from workbench.data.prompt_jsonl import tokenize_pair
from workbench.data.sources import load_examples
from workbench.decoding import DPS, generate
from workbench.engine.adapters import FAMILIES
from workbench.engine.models import tiny_model
from workbench.engine.numerics import (
    invariant_grad,
    mixed_threads_note,
    numerics_record,
    serial_product,
    serialize_small_products,
)
from workbench.experiments.evaluation import eval_config, evaluate
from workbench.heads import HeadWeights
from workbench.scores import score_heads
from workbench.scores.ablation import make_ablation
from workbench.scores.attribution import attribution_terms
from workbench.scores.exact import exact_deltas
from workbench.scores.nll import TargetSequence

THREAD_COUNTS = (1, 2, 3)  # 3: a split of the work that neither 1 nor 2 threads makes
STEP_SCORE_BOUND = 1e-4  # documented bound on decoding-step logits across thread counts (docs/numerics.md)


@contextmanager
def threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def at_each_thread_count(compute, counts=THREAD_COUNTS):
    results = {}
    for count in counts:
        with threads(count):
            results[count] = compute()
    return results


def test_invariant_grad_is_the_softmax_gradient_by_hand_and_restores_the_thread_count():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(2, 4, 37, 37, generator=generator, requires_grad=True)
    weights = torch.randn(2, 4, 37, 37, generator=generator)
    probabilities = scores.detach().softmax(-1)
    by_hand = probabilities * (weights - (weights * probabilities).sum(-1, keepdim=True))

    def gradient():
        return invariant_grad((weights * scores.softmax(-1)).sum(), [scores])[0]

    results = at_each_thread_count(gradient)
    torch.testing.assert_close(results[1], by_hand, atol=1e-6, rtol=1e-5)
    # the softmax's own backward kernel sums in another order on one thread than on several
    assert all(torch.equal(results[1], results[count]) for count in THREAD_COUNTS)
    with threads(2):
        gradient()
        assert torch.get_num_threads() == 2


def test_a_small_linear_product_runs_on_one_thread_and_gives_the_threads_back_even_when_it_fails():
    """The MLP's down projection of the default model's size (a reduction of 1,536 into 576): 20
    rows are a small product, 2,000 rows a large one; a failing forward still restores the count."""
    layer = torch.nn.Linear(1536, 576, bias=False)
    seen: list[int] = []
    serialize_small_products(layer)
    layer.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    assert serial_product(20, 1536, 576) and not serial_product(2000, 1536, 576)
    with threads(2), torch.no_grad():
        layer(torch.randn(1, 20, 1536))
        layer(torch.randn(2000, 1536))
        layer.weight.data = layer.weight.data[:, :10]  # the next forward fails inside the product
        with pytest.raises(RuntimeError):
            layer(torch.randn(20, 1536))
        assert torch.get_num_threads() == 2
    assert seen == [1, 2, 1]


def test_scores_run_small_products_on_one_thread_and_decoding_keeps_every_thread(tiny):
    """The tiny model's products are all small: a restart on the fast path runs them on one thread,
    decoding (which records its thread count instead) on every thread."""
    sequence = TargetSequence(tuple(tiny.encode_chat("Tell me about hiking.")), tuple(tiny.encode("I love trails!")))
    seen: list[int] = []
    tiny.fast_path.blocks[1].mlp.down_proj.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    with threads(2):
        exact_deltas(tiny, sequence, make_ablation(tiny, "zero"), [(1, 0)])
        scored, seen[:] = list(seen), []
        generate(tiny, [list(sequence.ids)[:6]], max_new_tokens=2)
        assert torch.get_num_threads() == 2
    assert scored and set(scored) == {1} and seen and set(seen) == {2}


def test_invariant_grad_of_a_small_product_equals_the_one_thread_gradient():
    """The input gradient of a linear layer for 20 rows, `grad @ W` with a reduction of 1,536 into
    576, is the one-thread product at every thread count (plain autograd shared its reduction out
    between 2 threads on the pinned build)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 576, generator=generator, requires_grad=True)
    weight, upstream = torch.randn(1536, 576, generator=generator), torch.randn(20, 1536, generator=generator)

    def gradient(grad):
        return grad((torch.nn.functional.linear(x, weight) * upstream).sum(), [x])[0]

    with threads(1):
        expected = gradient(torch.autograd.grad)
    torch.testing.assert_close(expected, upstream @ weight, atol=1e-4, rtol=1e-5)
    results = at_each_thread_count(lambda: gradient(invariant_grad))
    assert all(torch.equal(results[count], expected) for count in THREAD_COUNTS)


@pytest.fixture(scope="module", params=FAMILIES)
def family_lens(request):
    return tiny_model(family=request.param)


def test_attribution_and_exact_pcs_are_bit_equal_at_any_thread_count(family_lens):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 60, (90,), generator=generator).tolist()
    sequence = TargetSequence(tuple(ids[:70]), tuple(ids[70:]))
    ablation = make_ablation(family_lens, "mean", [ids])
    results = at_each_thread_count(
        lambda: (*attribution_terms(family_lens, sequence, ablation), exact_deltas(family_lens, sequence, ablation))
    )
    for count in THREAD_COUNTS[1:]:
        for name, first, other in zip(("estimate", "magnitude", "exact"), results[1], results[count]):
            assert torch.equal(first, other), f"{name} at {count} threads differs from 1 thread"


@pytest.fixture(scope="module")
def examples(tiny):
    return [
        tokenize_pair(
            tiny,
            f"e{i}",
            f"u{i}",
            f"Profile: likes {topic}. Write a post.",
            f"All about {topic}!",
            prompt_no_profile="Write a post.",
        )
        for i, topic in enumerate(["cats", "rain", "jazz", "tea"])
    ]


def test_hybrid_discovery_is_the_same_at_any_thread_count(tiny, examples):
    results = at_each_thread_count(
        lambda: score_heads(tiny, examples, method="hybrid", variant="profile-contrast", top_k=2, progress=False)
    )
    for count in THREAD_COUNTS[1:]:
        assert torch.equal(results[1].per_example, results[count].per_example)
        assert torch.equal(results[1].exact, results[count].exact)
        assert HeadWeights.from_scores(results[count], top_k=2).heads() == HeadWeights.from_scores(results[1], top_k=2).heads()


def test_a_scan_resumed_at_another_thread_count_equals_an_uninterrupted_one(tiny, examples, tmp_path):
    options = dict(method="hybrid", variant="profile-contrast", top_k=2, progress=False)
    with threads(2):
        uninterrupted = score_heads(tiny, examples, **options)
    with threads(1):  # the interrupted half: the first two examples, checkpointed
        score_heads(tiny, examples[:2], checkpoint=tmp_path / "scan", **options)
    with threads(2):
        resumed = score_heads(tiny, examples, checkpoint=tmp_path / "scan", **options)
    assert torch.equal(resumed.per_example, uninterrupted.per_example)
    assert torch.equal(resumed.exact, uninterrupted.exact)


def step_scores(generations):
    return torch.tensor([step["top_scores"][0]["value"] for generation in generations for step in generation.steps])


def test_decoding_gives_the_same_tokens_at_any_thread_count_and_scores_within_the_bound(tiny):
    prompts = [tiny.encode(text, add_bos=True) for text in ("Write about cats and rain.", "Hi.")]
    weights = torch.zeros(tiny.n_layers, tiny.n_heads)
    weights[1, 2], weights[2, 0] = 0.7, 0.3
    for decoder in (None, DPS(HeadWeights(weights), gamma=1.0)):
        results = at_each_thread_count(
            lambda decoder=decoder: generate(tiny, prompts, decoder=decoder, max_new_tokens=12, diagnostics=True)
        )
        for count in THREAD_COUNTS[1:]:
            assert [g.token_ids for g in results[count]] == [g.token_ids for g in results[1]]
            difference = (step_scores(results[count]) - step_scores(results[1])).abs().max()
            assert difference <= STEP_SCORE_BOUND


def test_an_evaluation_resumed_at_another_thread_count_records_both_and_says_so(tiny, tmp_path):
    examples = load_examples(None, "LaMP-4", "dev")[:3]
    config = eval_config(task="LaMP-4", split="dev", model=tiny.name, max_new_tokens=4, batch_size=1)
    with threads(1):
        evaluate(tiny, examples[:2], config, tmp_path, progress=False)
    with threads(2), pytest.warns(UserWarning, match="decoded at 1, 2 torch threads"):
        metrics = evaluate(tiny, examples, config, tmp_path, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [line["threads"] for line in lines] == [1, 1, 2]
    assert metrics["threads"] == [1, 2] and "1, 2 torch threads" in metrics["threads_note"]
    assert json.loads((tmp_path / "metrics.json").read_text())["threads_note"] == metrics["threads_note"]


def test_records_and_notes():
    assert numerics_record("cpu") == {"device": "cpu", "threads": torch.get_num_threads()}
    assert numerics_record("cuda") == {"device": "cuda", "threads": None}
    assert mixed_threads_note([2, 2, None], "x") is None
    assert mixed_threads_note([2, 1, 2], "the run").startswith("the run mixes results decoded at 1, 2 torch threads")


@pytest.mark.slow
def test_the_default_model_scores_and_decodes_alike_at_1_and_2_threads(default_lens):
    from workbench.data.prompts import PromptConfig, build_prompt, tokenized_examples

    examples = tokenized_examples(default_lens, load_examples(None, "LaMP-4", "train")[:2], PromptConfig())
    prompt = build_prompt(default_lens, load_examples(None, "LaMP-4", "dev")[0], PromptConfig())
    results = {}
    for count in (1, 2):
        with threads(count):
            scores = score_heads(default_lens, examples, method="hybrid", top_m=6, progress=False)
            decoded = generate(default_lens, [prompt], max_new_tokens=8, diagnostics=True)
            results[count] = scores, decoded
    (scores_1, decoded_1), (scores_2, decoded_2) = results[1], results[2]
    assert torch.equal(scores_1.per_example, scores_2.per_example) and torch.equal(scores_1.exact, scores_2.exact)
    assert decoded_1[0].token_ids == decoded_2[0].token_ids
    assert (step_scores(decoded_1) - step_scores(decoded_2)).abs().max() <= STEP_SCORE_BOUND


@pytest.mark.slow
def test_long_exact_scores_on_the_fast_path_are_the_same_at_1_and_2_threads(default_lens):
    """Restarts of a 640-token sequence run on the fast path's causal SDPA, whose blocks of queries
    the threads share out; the last layer's heads, one batch of 9 rows, restart with that block's
    MLP alone (at 9 rows x the 12 scored positions its sums depended on the thread count)."""
    ids = torch.randint(100, 40000, (640,), generator=torch.Generator().manual_seed(0)).tolist()
    sequence = TargetSequence(tuple(ids[:-12]), tuple(ids[-12:]))
    heads = [(22, head) for head in range(9)] + [(28, 0)] + [(29, head) for head in range(9)]
    grids = at_each_thread_count(lambda: exact_deltas(default_lens, sequence, make_ablation(default_lens, "zero"), heads), (1, 2))
    rows, columns = zip(*heads)
    assert torch.equal(grids[1][rows, columns], grids[2][rows, columns])


@pytest.mark.slow
@pytest.mark.parametrize("length, targets", [(100, 12), (150, 24)])
def test_short_sequences_score_alike_at_1_and_2_threads(default_lens, length, targets):
    """Lengths at which the default model's products are small (`serial_product`): the forward's
    down projection (57 to 192 rows), the backward through the up and gate projections, and through
    the unembedding for 16 or more target tokens."""
    generator = torch.Generator().manual_seed(length)
    ids = torch.randint(100, 40000, (length,), generator=generator).tolist()
    sequence = TargetSequence(tuple(ids[:-targets]), tuple(ids[-targets:]))
    zero = make_ablation(default_lens, "zero")
    heads = [(0, 0), (15, 3), (29, 4)]

    def scores():
        return attribution_terms(default_lens, sequence, zero), exact_deltas(default_lens, sequence, zero, heads)

    results = at_each_thread_count(scores, (1, 2))
    (estimate_1, magnitude_1), exact_1 = results[1]
    (estimate_2, magnitude_2), exact_2 = results[2]
    rows, columns = zip(*heads)
    assert torch.equal(estimate_1, estimate_2) and torch.equal(magnitude_1, magnitude_2)
    assert torch.equal(exact_1[rows, columns], exact_2[rows, columns])


@pytest.mark.slow  # loads the embedding model
def test_profile_embeddings_and_clusters_are_the_same_at_any_thread_count(tmp_path):
    import numpy as np
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from workbench.users.embeddings import embed_texts

    texts = [" ".join(str(item["text"])[:300] for item in e.profile[:4]) for e in load_examples(None, "LaMP-4", "train")[:24]]
    embedded, centres = {}, {}
    for count in (1, 2):
        with threads(count), threadpool_limits(count):
            embedded[count] = embed_texts(texts, cache=tmp_path / str(count), progress=False)
            centres[count] = KMeans(n_clusters=3, n_init=10, random_state=0).fit(embedded[1]).cluster_centers_
    assert np.array_equal(embedded[1], embedded[2]) and np.array_equal(centres[1], centres[2])
