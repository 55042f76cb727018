"""The model and the one way to run it (docs/architecture.md): load a model as a `Lens`, and run
it with `Lens.run` (head masks, hooks, recordings, a restart from a layer, KV-cached steps)."""

from workbench.engine.interventions import Hook, Recording
from workbench.engine.kv_cache import CacheSpec
from workbench.engine.lens import Forward, Lens
from workbench.engine.masks import HeadGeometry, HeadMask
from workbench.engine.models import load_model, tiny_model
from workbench.engine.tail import Restart, TailContext

__all__ = [
    "CacheSpec",
    "Forward",
    "HeadGeometry",
    "HeadMask",
    "Hook",
    "Lens",
    "Recording",
    "Restart",
    "TailContext",
    "load_model",
    "tiny_model",
]
