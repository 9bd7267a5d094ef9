"""sermodels models."""
from .annotators import (AnnotatorHeads, BaselineModel, MultiTaskAnnotatorModel, OneHotAnnotatorModel,
                         build_model)

__all__ = ["AnnotatorHeads", "BaselineModel", "MultiTaskAnnotatorModel", "OneHotAnnotatorModel", "build_model"]
