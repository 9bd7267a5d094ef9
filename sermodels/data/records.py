"""The one record type every corpus reader returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple


@dataclass
class Utterance:
    """One utterance with every individual annotator's ratings.

    ``ratings`` maps annotator id -> ``(activation, valence, dominance)`` on the corpus' own scale
    (NaN where a dimension was not rated); repeated ratings by one annotator are averaged by the reader.
    ``consensus`` is the corpus' consensus ``(activation, valence, dominance)`` on the same scale.
    ``categories`` maps annotator id -> categorical label word; ``comments`` annotator id -> free text.
    ``shares`` holds continuous per-emotion targets (ComParE Emotion Share), emotion name -> value.
    """

    utterance_id: str
    corpus: str
    audio_path: Optional[str] = None
    transcript: Optional[str] = None
    speaker: Optional[str] = None
    gender: Optional[str] = None
    duration: Optional[float] = None
    split: Optional[str] = None
    session: Optional[str] = None
    ratings: Dict[str, Tuple[float, float, float]] = field(default_factory=dict)
    consensus: Optional[Tuple[float, float, float]] = None
    consensus_category: Optional[str] = None
    categories: Dict[str, str] = field(default_factory=dict)
    secondary: Dict[str, List[str]] = field(default_factory=dict)
    comments: Dict[str, str] = field(default_factory=dict)
    shares: Dict[str, float] = field(default_factory=dict)
    extra: Dict[str, object] = field(default_factory=dict)
