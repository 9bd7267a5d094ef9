"""Splits: the papers' schemes (shipped as JSON in ``sermodels/data/splits/<corpus>.json``), user split files,
partition renaming, size reports, and group k-fold.

Each JSON file holds ``"default"`` (the scheme used when none is given, :func:`default_scheme`) and ``"schemes"``:
scheme name -> ``{"by": <attribute>, "source": <where it comes from>, "groups": {split: [values]}}`` with ``by`` one
of ``speaker``, ``session``, ``split`` (the corpus' own partition column), ``stress`` (MuSE ``extra["stress"]``);
``"groups": null`` makes every value of the attribute its own partition. Every corpus also has the built-in scheme
``all`` (every utterance in ``test``: cross-corpus evaluation).

:func:`make_splits` is the one call for a command line: a scheme or a split file (:func:`read_split_file`;
:func:`parse_split` tells which a config value names), then renaming (:func:`rename_partitions`) and a clear error
for required partitions that are empty (:func:`require_partitions`); :func:`split_sizes` reports every partition's
size and warns about tiny ones.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .corpus import CsvFile, Issues, corpus_name, read_text, strip_wav
from .records import Utterance

Splits = Dict[str, List[Utterance]]
TINY_PARTITION = 10  # split_sizes warns below this many utterances
RENAME_HINT = "rename one, e.g. rename={{'{new}': '{old}'}}"  # require_partitions' advice for a missing partition
SPLIT_FILE_ID_COLUMNS = ("utterance_id", "id", "utterance", "filename", "file", "sentence_name")
SPLIT_FILE_PARTITION_COLUMNS = ("split", "partition", "set", "split_set", "fold")

SPLIT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "splits")
ATTRIBUTES: Dict[str, Callable[[Utterance], Optional[str]]] = {
    "speaker": lambda u: u.speaker,
    "session": lambda u: u.session,
    "split": lambda u: u.split,
    "stress": lambda u: u.extra.get("stress"),
}


def _scheme_file(corpus: str) -> dict:
    path = os.path.join(SPLIT_DIR, f"{corpus_name(corpus)}.json")
    if not os.path.isfile(path):
        raise ValueError(f"no split file for corpus {corpus!r} ({path}); known: "
                         f"{sorted(f[:-5] for f in os.listdir(SPLIT_DIR) if f.endswith('.json'))}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def default_scheme(corpus: str) -> str:
    """The scheme of ``corpus`` used when none is given: MSP-Improv ``speaker_independent_is2024``, IEMOCAP
    ``session``, MSP-Podcast ``official``, MuSE ``speaker``, ComParE and generic ``official``."""
    return _scheme_file(corpus)["default"]


def parse_split(value: Optional[str], corpus: str) -> Tuple[Optional[str], Optional[str]]:
    """``(scheme, split_file)`` named by a config or command-line split value: None -> the corpus'
    :func:`default_scheme`; an existing file, or a value that ends in ``.json`` / ``.csv`` or holds a path
    separator -> a split file (:func:`read_split_file`); anything else -> a scheme name."""
    if value is None:
        return default_scheme(corpus), None
    value = os.fspath(value)
    if os.path.isfile(value) or value.lower().endswith((".json", ".csv")) or os.sep in value or \
            (os.altsep and os.altsep in value):
        return None, value
    return value, None


def schemes(corpus: str) -> Dict[str, dict]:
    """All split schemes of ``corpus`` (name or alias) as stored in its JSON file (plus the built-in ``all``)."""
    out = dict(_scheme_file(corpus)["schemes"])
    out["all"] = {"by": None, "source": "every utterance in test (cross-corpus evaluation)", "groups": {"test": []}}
    return out


def assign_split(utterances: Sequence[Utterance], corpus: str, scheme: str) -> Dict[str, List[Utterance]]:
    """Split ``utterances`` by a named scheme -> ``{split name: [utterances]}`` in input order.

    Utterances whose speaker/session/partition is in no group of the scheme are left out. MSP-Improv:
    ``speaker_independent_is2024`` (train F01 F03 F05 F06 M02 M03 M04 M06 / val F02 M01 / test F04 M05),
    ``session_is2023`` (sessions 1-4 / 5 / 6); IEMOCAP: ``session`` (Ses01-03 / Ses04 / Ses05), ``session_05F``,
    ``session_05M``; MSP-Podcast: ``official`` (train / val / test1 / test2); MuSE: ``speaker``, ``stressed``,
    ``non_stressed``, ``full``; ComParE and generic: ``official`` (generic: one partition per value of the split
    column); every corpus: ``all``.
    """
    table = schemes(corpus)
    if scheme not in table:
        owners = [name for name, spec in table.items() if scheme in (spec["groups"] or {})]
        hint = f"; {scheme!r} is a partition of scheme {owners[0]!r}, not a scheme" if owners else ""
        raise ValueError(f"unknown split scheme {scheme!r} for {corpus_name(corpus)}; expected one of "
                         f"{sorted(table)} or the path of a split file (.json or .csv){hint}")
    spec = table[scheme]
    if spec["by"] is None:
        return {"test": list(utterances)}
    get = ATTRIBUTES[spec["by"]]
    if spec["groups"] is None:
        out: Splits = {}
        for u in utterances:
            if get(u) is not None:
                out.setdefault(get(u), []).append(u)
        return out
    where = {v: split for split, values in spec["groups"].items() for v in values}
    out = {split: [] for split in spec["groups"]}
    for u in utterances:
        split = where.get(get(u))
        if split is not None:
            out[split].append(u)
    return out


def read_split_file(path) -> Dict[str, str]:
    """Utterance id -> partition from a user's split file.

    JSON: ``{"<id>": "<partition>", ...}`` or ``{"<partition>": ["<id>", ...], ...}``. CSV: a header with an id
    column (one of :data:`SPLIT_FILE_ID_COLUMNS`, any case) and a partition column (one of
    :data:`SPLIT_FILE_PARTITION_COLUMNS`); other columns are ignored. Ids lose a ``.wav`` suffix (as the readers'
    ids). An id listed twice with different partitions, an empty id or partition, or any other shape raises
    ValueError naming the file (and line).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file not found: {path}")
    issues = Issues(lenient=False)
    out: Dict[str, str] = {}

    def add(uid, part, where: str):
        if not isinstance(uid, str) or not isinstance(part, str) or not uid.strip() or not part.strip():
            raise ValueError(f"{where}: need a non-empty id and partition, got {uid!r} -> {part!r}")
        uid, part = strip_wav(uid), part.strip()
        if out.setdefault(uid, part) != part:
            raise ValueError(f"{where}: {uid!r} is listed in partition {out[uid]!r} and in {part!r}")

    if path.lower().endswith(".json"):
        try:
            data = json.loads(read_text(path, issues))
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(data, dict) or not data:
            raise ValueError(f"{path}: expected a non-empty JSON object (id -> partition, or partition -> [ids])")
        if all(isinstance(v, list) for v in data.values()):
            for part, ids in data.items():
                for uid in ids:
                    add(uid, part, f"{path}: partition {part!r}")
        elif all(isinstance(v, str) for v in data.values()):
            for uid, part in data.items():
                add(uid, part, f"{path}: id {uid!r}")
        else:
            raise ValueError(f"{path}: values must be all partition names (id -> partition) or all lists of ids "
                             f"(partition -> [ids])")
        return out
    table = CsvFile(path, issues)
    lower = [h.lower() for h in table.header]
    id_col = next((table.header[lower.index(c)] for c in SPLIT_FILE_ID_COLUMNS if c in lower), None)
    part_col = next((table.header[lower.index(c)] for c in SPLIT_FILE_PARTITION_COLUMNS if c in lower), None)
    if id_col is None or part_col is None:
        raise ValueError(f"{path}:1: need an id column (one of {SPLIT_FILE_ID_COLUMNS}) and a partition column "
                         f"(one of {SPLIT_FILE_PARTITION_COLUMNS}); found {table.header}")
    for lineno, row in table.rows():
        add(row[id_col], row[part_col], f"{path}:{lineno}")
    if not out:
        raise ValueError(f"{path}: no rows")
    return out


def split_by_file(utterances: Sequence[Utterance], path) -> Splits:
    """Partition ``utterances`` by a split file (:func:`read_split_file`), partitions in the file's order.

    Utterances the file does not list are left out; ids of the file that are not in ``utterances`` are reported
    with a warning, and a file that matches none of them raises ValueError showing ids of both.
    """
    where = read_split_file(path)
    out: Splits = {part: [] for part in dict.fromkeys(where.values())}
    known = set()
    for u in utterances:
        known.add(u.utterance_id)
        part = where.get(u.utterance_id)
        if part is not None:
            out[part].append(u)
    unknown = [uid for uid in where if uid not in known]
    if len(unknown) == len(where):
        raise ValueError(f"none of the {len(where)} ids in {path} is an utterance of the corpus (file: "
                         f"{unknown[:3]}; corpus: {[u.utterance_id for u in utterances[:3]]})")
    if unknown:
        warnings.warn(f"{len(unknown)} of the {len(where)} ids in {path} are not utterances of the corpus (e.g. "
                      f"{unknown[:3]}): ignored")
    return out


def rename_partitions(splits: Splits, renames: Union[Mapping[str, str], Iterable[str], None]) -> Splits:
    """Partitions renamed ``new <- old``: ``{"test": "test1"}``, ``["test=test1"]`` or ``"test=test1,val=dev"`` (e.g.
    MSP-Podcast's Test1 used as the test set). Other partitions keep their names; order is kept. ValueError for an
    unknown old name, a ``new=old`` string without ``=``, or a new name that collides with a partition that stays."""
    if not renames:
        return dict(splits)
    if isinstance(renames, str):
        renames = renames.split(",")
    if not isinstance(renames, Mapping):
        pairs = {}
        for item in renames:
            new, sep, old = str(item).partition("=")
            if not sep or not new.strip() or not old.strip():
                raise ValueError(f"partition renaming {item!r} must look like new=old (e.g. test=test1)")
            pairs[new.strip()] = old.strip()
        renames = pairs
    old_to_new = {old: new for new, old in renames.items()}
    unknown = [old for old in old_to_new if old not in splits]
    if unknown or len(old_to_new) != len(renames):
        raise ValueError(f"cannot rename partition(s) {unknown or list(renames.values())}: the split has "
                         f"{list(splits)} (each old name once)")
    names = [old_to_new.get(p, p) for p in splits]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"renaming {dict(renames)} gives partition name(s) {clash} twice; the split has "
                         f"{list(splits)}")
    return {old_to_new.get(p, p): us for p, us in splits.items()}


def require_partitions(splits: Splits, names: Iterable[str], what: str = "the split",
                       hint: str = RENAME_HINT) -> None:
    """ValueError naming every partition of ``names`` that is missing or empty in ``splits``, with the sizes of
    all partitions. When a partition is missing and another non-empty partition could stand in for it, the message
    ends with ``hint`` formatted with ``new`` (the missing name) and ``old`` (the stand-in): how the caller's user
    renames or picks partitions (default ``rename one, e.g. rename={'test': 'test1'}``)."""
    names = list(names)
    empty = [n for n in names if not splits.get(n)]
    if empty:
        sizes = ", ".join(f"{p}={len(us)}" for p, us in splits.items()) or "none"
        missing = [n for n in empty if n not in splits]
        spare = sorted((p for p, us in splits.items() if us and p not in names),
                       key=lambda p: not p.startswith(missing[0]) if missing else 0)  # test1 stands in for test first
        end = f"; {hint.format(new=missing[0], old=spare[0])}" if missing and spare else ""
        raise ValueError(f"partition(s) {empty} of {what} are missing or empty (partitions: {sizes}){end}")


def split_sizes(splits: Splits, total: Optional[int] = None, tiny: int = TINY_PARTITION,
                log: Optional[Callable[[str], None]] = None) -> Dict[str, int]:
    """Size of every partition; ``log`` (e.g. ``print``) gets one line per partition (utterances, speakers) and
    the number left out of every partition when ``total`` (the corpus size) is given. Partitions with fewer than
    ``tiny`` utterances raise a warning: metrics on them are unreliable."""
    sizes = {p: len(us) for p, us in splits.items()}
    for p, us in splits.items():
        speakers = len({u.speaker for u in us if u.speaker is not None})
        line = f"  {p}: {len(us)} utterances, {speakers} speakers"
        if len(us) < tiny:
            line += f"  [tiny: fewer than {tiny}]"
            warnings.warn(f"partition {p!r} has only {len(us)} utterances (< {tiny}): its metrics are unreliable")
        if log:
            log(line)
    if total is not None and log:
        left = total - len({id(u) for us in splits.values() for u in us})
        if left:
            log(f"  in no partition: {left} of {total} utterances")
    return sizes


def split_source(corpus: str, scheme: Optional[str] = None, split_file=None) -> str:
    """How :func:`make_splits` names where its partitions come from (``split scheme 'official' of msp-podcast``,
    ``split file /x/split.json``), for messages."""
    if split_file is not None:
        return f"split file {split_file}"
    return f"split scheme {scheme!r} of {corpus_name(corpus)}"


def make_splits(utterances: Sequence[Utterance], corpus: str, scheme: Optional[str] = None, split_file=None,
                rename: Union[Mapping[str, str], Iterable[str], None] = None, require: Iterable[str] = (),
                hint: str = RENAME_HINT) -> Splits:
    """Partitions for a run: ``scheme`` (:func:`assign_split`) or ``split_file`` (:func:`split_by_file`), exactly
    one; then :func:`rename_partitions` and :func:`require_partitions` for ``require`` (e.g. ``("train", "val",
    "test")``; ``hint`` as there)."""
    if (scheme is None) == (split_file is None):
        raise ValueError("give exactly one of scheme and split_file")
    splits = split_by_file(utterances, split_file) if split_file is not None else \
        assign_split(utterances, corpus, scheme)
    splits = rename_partitions(splits, rename)
    require_partitions(splits, require, split_source(corpus, scheme, split_file), hint)
    return splits


def kfold(utterances: Sequence[Utterance], k: int, by: str = "speaker", seed: int = 0
          ) -> List[Dict[str, List[Utterance]]]:
    """Group k-fold (the legacy ASRU folds): ``k`` dicts ``{"train", "val", "test"}``.

    Groups (speakers or sessions) are dealt largest first to the currently smallest fold (ties by name), as
    scikit-learn's ``GroupKFold``; fold i's groups are its test set, and a quarter of the remaining groups (at
    least one) drawn with ``numpy.random.default_rng(seed)`` form its validation set.
    """
    if by not in ("speaker", "session"):
        raise ValueError(f"by must be 'speaker' or 'session', got {by!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an int >= 2, got {k!r}")
    get = ATTRIBUTES[by]
    missing = [u.utterance_id for u in utterances if get(u) is None]
    if missing:
        raise ValueError(f"{len(missing)} utterances have no {by} (e.g. {missing[:3]}); filter them first")
    sizes = Counter(get(u) for u in utterances)
    if len(sizes) < max(k, 3):
        raise ValueError(f"k={k} folds need at least {max(k, 3)} {by} groups (one test group per fold and "
                         f"train + val groups in each), found {len(sizes)}")
    fold_of: Dict[str, int] = {}
    load = [0] * k
    for g, n in sorted(sizes.items(), key=lambda gn: (-gn[1], gn[0])):
        f = min(range(k), key=lambda i: (load[i], i))
        fold_of[g] = f
        load[f] += n
    rng = np.random.default_rng(seed)
    folds = []
    for f in range(k):
        rest = sorted(g for g, i in fold_of.items() if i != f)
        val = set(rng.choice(rest, size=max(1, len(rest) // 4), replace=False).tolist())
        fold = {"train": [], "val": [], "test": []}
        for u in utterances:
            g = get(u)
            fold["test" if fold_of[g] == f else "val" if g in val else "train"].append(u)
        folds.append(fold)
    return folds
