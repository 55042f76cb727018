"""How much a user's profile helps a model: the reference output's NLL with and without it.

This is the data card's measure of the demo set and a quick check for any data set: if the
profile does not lower the NLL of the user's reference output, there is nothing for preference
heads to carry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from tqdm.auto import tqdm

from workbench.data.examples import Example
from workbench.data.prompts import PromptConfig, tokenized_examples
from workbench.engine.lens import Lens
from workbench.scores.engine import sequence_nll
from workbench.scores.nll import TargetSequence


def reference_nll(lens: Lens, prompt_ids: Sequence[int], target_ids: Sequence[int]) -> float:
    """Mean NLL (nats per token) of `target_ids` after `prompt_ids`."""
    return sequence_nll(lens, TargetSequence(tuple(prompt_ids), tuple(target_ids))).clean_mean


def profile_nll(
    lens: Lens, examples: Sequence[Example], config: PromptConfig = PromptConfig(), *, progress: bool = False
) -> pd.DataFrame:
    """One row per example: `example_id, user_id, style, nll_with_profile, nll_without_profile`,
    and `nll_swapped_profile` (another user's profile of similar length, drawn among `examples`;
    NaN where no other user has one): is it *this* user's profile that helps, or any profile?"""
    rows = []
    pairs = tokenized_examples(lens, examples, config)
    for example, pair in tqdm(list(zip(examples, pairs)), desc="reference NLL", unit="example", disable=not progress):
        rows.append({
            "example_id": example.example_id, "user_id": example.user_id, "style": example.style,
            "nll_with_profile": reference_nll(lens, pair.prompt_ids, pair.target_ids),
            "nll_without_profile": reference_nll(lens, pair.no_profile_prompt_ids, pair.target_ids),
            "nll_swapped_profile": math.nan if pair.swapped_prompt_ids is None
            else reference_nll(lens, pair.swapped_prompt_ids, pair.target_ids),
        })  # fmt: skip
    return pd.DataFrame(rows)
