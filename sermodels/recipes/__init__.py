"""Recipe registry: ``sermodels train <name>`` runs ``RECIPES[name]``.

Each entry is ``"module:function"``; the function takes ``(config: dict, corpus: str, data_root: str, out_dir: str)``
and returns a results dict. Modules are imported lazily so that one recipe's optional dependencies never break another.
"""
from importlib import import_module
from typing import Callable

RECIPES = {
    "annotators": "sermodels.recipes.annotators:run",
    "label_embedding": "sermodels.recipes.label_embedding:run",
    "distilled": "sermodels.recipes.distilled:run",
    "emotion_share": "sermodels.recipes.emotion_share:run",
    "continual": "sermodels.recipes.continual:run",
}


def get_recipe(name: str) -> Callable:
    """The ``run`` function of recipe ``name``; raises ``KeyError`` listing the known recipes."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}")
    module, func = RECIPES[name].split(":")
    return getattr(import_module(module), func)
