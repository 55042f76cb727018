"""A toy clustering of tiny-model scoring examples for per-cluster discovery tests: 12 examples of
4 users in 3 clusters of 6, 3 and 3 examples, each cluster's members spread over the example
order (so that contiguous shards of the examples in cluster order cut clusters apart)."""

from __future__ import annotations

import numpy as np

from workbench.data.prompt_jsonl import tokenize_pair
from workbench.data.tokenized import TokenizedExample
from workbench.users import ClusterFile, ProfileText

TOPICS = ["cats", "rain", "jazz", "tea", "sun", "snow", "chess", "bread", "kites", "moss", "owls", "figs"]
USERS_OF_CLUSTER = (("u0", "u1"), ("u2",), ("u3",))


def toy_examples(tiny) -> list[TokenizedExample]:
    return [
        tokenize_pair(tiny, f"e{i}", f"u{i % 4}", f"Profile: likes {topic}. Write.", f"All about {topic}!")
        for i, topic in enumerate(TOPICS)
    ]


def toy_clusters(examples: list[TokenizedExample]) -> ClusterFile:
    members = tuple(tuple(e.example_id for e in examples if e.user_id in users) for users in USERS_OF_CLUSTER)
    centroids = np.eye(len(USERS_OF_CLUSTER), 4, dtype=np.float32)  # immaterial to discovery
    return ClusterFile(
        task="t", split="train", data="toy", data_digest="toy", n_examples=len(examples), embedder={"name": "none"},
        profile_text=ProfileText(), seed=0, group_size=None, centroids=centroids, user_ids=USERS_OF_CLUSTER,
        example_ids=members, silhouette=None,
    )  # fmt: skip
