"""Head scores: Preference Contribution Scores (exact, attribution, hybrid; standard and contrast
variants), retrieval and induction scores. All return `[layer, head]` grids (PCS per example too)
that `workbench.heads.HeadWeights.from_scores` turns into head weights."""

from workbench.scores.ablation import ABLATIONS, AblationKind
from workbench.scores.estimators import ESTIMATORS, EstimatorName
from workbench.scores.induction import induction_scores
from workbench.scores.pcs import METHODS, VARIANTS, Method, ScanOptions, Variant, score_heads
from workbench.scores.results import PCSResult
from workbench.scores.retrieval import retrieval_scores

__all__ = [
    "ABLATIONS",
    "ESTIMATORS",
    "METHODS",
    "VARIANTS",
    "AblationKind",
    "EstimatorName",
    "Method",
    "PCSResult",
    "ScanOptions",
    "Variant",
    "induction_scores",
    "retrieval_scores",
    "score_heads",
]
