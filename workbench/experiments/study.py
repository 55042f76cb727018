"""Interactive head-ablation studies: one prompt and reference, many head sets, side by side.

For poking at heads in a notebook: how much does the reference output's NLL rise when these
heads are ablated together, at which tokens, and what does the model write instead?

    study = AblationStudy.from_text(lens, "Write a headline about ...", "a headline in my style")
    study.compare({"top-3": [(12, 3), (20, 5), (4, 1)], "random": [(2, 2), (9, 0), (25, 8)]})
    study.per_token({"top-3": [...]})          # where in the reference the damage is
    study.continuations({"top-3": [...]})      # what greedy decoding writes with the heads ablated
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from workbench.data.tokenized import TokenizedExample
from workbench.decoding import Greedy, Suppressed, Suppression, generate
from workbench.engine.interventions import Hook
from workbench.engine.lens import Lens
from workbench.engine.masks import Head, HeadMask
from workbench.heads import HeadWeights
from workbench.scores.engine import sequence_nll
from workbench.scores.nll import TargetSequence
from workbench.tensor_types import HeadReference

HeadSets = Mapping[str, Sequence[Head]]


class AblationStudy:
    """Ablate named head sets (each set together, zero or mean ablation) on one example; `hooks`
    (TransformerLens-style `(name, fn)`, e.g. a steering vector) act in every forward, clean and ablated."""

    def __init__(
        self,
        lens: Lens,
        prompt_ids: Sequence[int],
        target_ids: Sequence[int],
        *,
        z_ref: HeadReference | None = None,
        hooks: Sequence[Hook] = (),
    ):
        self.lens, self.hooks = lens, tuple(hooks)
        self.example = TokenizedExample("study", "", tuple(prompt_ids), tuple(target_ids))
        self.example.check_fits(lens.geometry.n_ctx)
        self.sequence = TargetSequence(self.example.prompt_ids, self.example.target_ids)
        self.z_ref = z_ref

    @classmethod
    def from_text(
        cls,
        lens: Lens,
        prompt: str,
        target: str,
        *,
        chat: bool = True,
        z_ref: HeadReference | None = None,
        hooks: Sequence[Hook] = (),
    ) -> AblationStudy:
        """`prompt` as a chat user turn (or raw text with `chat=False`); `target` follows it."""
        prompt_ids = lens.encode_chat(prompt) if chat else lens.encode(prompt, add_bos=True)
        return cls(lens, prompt_ids, lens.encode(target), z_ref=z_ref, hooks=hooks)

    def token_nll(self, head_sets: HeadSets) -> torch.Tensor:
        """`[1 + sets, target]` NLL per reference token: the clean row first, then each set ablated
        together (one clean pass, then each set run from its lowest layer by the ΔNLL engine)."""
        masks = [HeadMask.ablate(self.lens.geometry, heads, z_ref=self.z_ref) for heads in head_sets.values()]
        result = sequence_nll(self.lens, self.sequence, masks, hooks=self.hooks)
        return torch.cat([result.clean[None], result.masked])

    def compare(self, head_sets: HeadSets) -> pd.DataFrame:
        """Mean reference NLL per set and its rise over the clean model."""
        nll = self.token_nll(head_sets).mean(dim=1)
        return pd.DataFrame(
            {
                "set": ["clean", *head_sets],
                "n_heads": [0, *[len(heads) for heads in head_sets.values()]],
                "nll": nll.tolist(),
                "delta_nll": (nll - nll[0]).tolist(),
            }
        )

    def per_token(self, head_sets: HeadSets) -> pd.DataFrame:
        """One row per reference token: its text, clean NLL and each set's rise over it."""
        nll = self.token_nll(head_sets)
        frame = pd.DataFrame(
            {
                "position": range(len(self.example.target_ids)),
                "token": [self.lens.decode([t], skip_special_tokens=False) for t in self.example.target_ids],
                "clean_nll": nll[0].tolist(),
            }
        )
        for row, name in enumerate(head_sets, start=1):
            frame[f"delta_{name}"] = (nll[row] - nll[0]).tolist()
        return frame

    def continuations(self, head_sets: HeadSets, *, max_new_tokens: int = 24) -> pd.DataFrame:
        """What greedy decoding writes from the prompt, clean and with each set ablated."""
        prompt = [list(self.example.prompt_ids)]
        texts = {"clean": generate(self.lens, prompt, Greedy(), max_new_tokens=max_new_tokens, hooks=self.hooks)[0].text}
        for name, heads in head_sets.items():
            if not heads:  # nothing ablated: the clean continuation
                texts[name] = texts["clean"]
                continue
            grid = torch.zeros(self.lens.n_layers, self.lens.n_heads)
            for layer, head in heads:
                grid[self.lens.geometry.check_head(layer, head)] = 1.0
            how = Suppression(suppression="mean" if self.z_ref is not None else "zero", z_ref=self.z_ref)
            decoder = Suppressed(HeadWeights(grid), generic=how)
            texts[name] = generate(self.lens, prompt, decoder, max_new_tokens=max_new_tokens, hooks=self.hooks)[0].text
        return pd.DataFrame({"set": list(texts), "continuation": list(texts.values())})
