"""Run folders: safe reruns, provenance, merged results.

A run folder (``sermodels train ... --output-dir DIR``) holds:

- ``config.yaml``: the effective config (every default filled in);
- ``run.json``: the recipe, the fingerprint of the config and of the data (utterance ids per split, their ratings,
  label settings), and one entry per invocation: command line, time, package versions, git commit when available;
- ``run.log``: everything the run printed, plus one line per epoch of every trainer;
- ``results.json`` and ``table.txt``; the trainers' folders (``metrics.csv``/``.json``, ``last.pt``, ``best.pt``).

:class:`RunFolder` enforces the rerun rules. Before any data work, :meth:`RunFolder.check_config` compares the config
fingerprint with the folder's; after the corpus is read, :meth:`RunFolder.claim` compares the data fingerprint. The
same fingerprint resumes (every trainer continues from its ``last.pt``); a different one is refused
(:class:`RunConflict`, naming what changed) unless ``overwrite``, which clears the folder (keeping the feature cache).
Nothing in the folder is written before both checks pass. Results of ``--run`` invocations merge into
``results.json``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .config import PRESENTATION_KEYS, dump_yaml, load_yaml

log = logging.getLogger("sermodels")
CACHE_DIRS = ("features", "tiny_models")  # kept by --overwrite: content-keyed caches, not results
RUN_FILE = "run.json"
COMMAND: List[str] = []  # the command line of this process as the CLI received it (set by sermodels.cli.main)


class RunConflict(ValueError):
    """An output folder that holds a different run."""


def say(message: str) -> None:
    """Print ``message`` and write it to the log file of the active run folder."""
    print(message, flush=True)
    log.info(message)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=float) + "\n")


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def config_fingerprint_items(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The flattened config entries that define a run's results (:data:`sermodels.config.PRESENTATION_KEYS` out)."""
    return {k: v for k, v in _flatten(config).items()
            if not any(k == p or k.startswith(p + ".") for p in PRESENTATION_KEYS)}


def data_fingerprint(splits: Mapping[str, Sequence[Any]], **settings: Any) -> str:
    """Fingerprint of the data a run trains and tests on: per split, each utterance's id, ratings and consensus
    (:class:`sermodels.data.Utterance`), plus label ``settings``."""
    content = {name: [(u.utterance_id, sorted((a, list(r)) for a, r in u.ratings.items()),
                       list(u.consensus) if u.consensus is not None else None) for u in members]
               for name, members in splits.items()}
    return _hash({"splits": content, "settings": settings})


def _git_commit() -> Optional[str]:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> Dict[str, Optional[str]]:
    """Versions of Python and of the packages a run depends on (None = not installed)."""
    from importlib import metadata

    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in ("kdekit", "torch", "transformers", "numpy", "scipy", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class RunFolder:
    """The output folder of one recipe run; see the module docstring. ``is_main``: only rank 0 writes."""

    def __init__(self, path, recipe: str, config: Mapping[str, Any], *, overwrite: bool = False,
                 is_main: bool = True):
        self.path = Path(path)
        self.recipe, self.config, self.overwrite, self.is_main = recipe, dict(config), overwrite, is_main
        self.config_items = config_fingerprint_items(config)
        self._handler: Optional[logging.Handler] = None
        self.resumed = False

    # -- checks (read only) -------------------------------------------------------------------------------------
    def _existing(self) -> Optional[dict]:
        f = self.path / RUN_FILE
        if f.is_file():
            return json.loads(f.read_text(encoding="utf-8"))
        others = [p.name for p in self.path.iterdir() if p.name not in CACHE_DIRS] if self.path.is_dir() else []
        if others and not self.overwrite:
            raise RunConflict(f"output folder {self.path} is not empty ({', '.join(sorted(others)[:5])}) and has no "
                              f"{RUN_FILE}: not a sermodels run folder, or one from an older version; choose another "
                              f"--output-dir or pass --overwrite to replace its contents")
        return None

    def check_config(self) -> "RunFolder":
        """Refuse (RunConflict) a folder that holds a run of another recipe or config, unless ``overwrite``."""
        old = self._existing()
        if old is None or self.overwrite:
            return self
        if old.get("recipe") != self.recipe:
            raise RunConflict(f"output folder {self.path} holds a {old.get('recipe')!r} run, not {self.recipe!r}; "
                              f"choose another --output-dir or pass --overwrite")
        before = old.get("config_items", {})
        changed = sorted(k for k in set(before) | set(self.config_items) if before.get(k) != self.config_items.get(k))
        if changed:
            shown = "; ".join(f"{k}: {before.get(k, '<unset>')!r} -> {self.config_items.get(k, '<unset>')!r}"
                              for k in changed[:6]) + (f"; ... ({len(changed)} keys)" if len(changed) > 6 else "")
            raise RunConflict(f"output folder {self.path} holds a run with another config ({shown}); nothing was "
                              f"changed. Pass --overwrite to replace it, or choose another --output-dir")
        return self

    def claim(self, data: str) -> "RunFolder":
        """After the data is read: refuse another data fingerprint (unless ``overwrite``); then write ``config.yaml``
        and ``run.json`` and open ``run.log``. Same fingerprint: the run resumes."""
        old = self._existing()
        if old is not None and not self.overwrite:
            self.check_config()
            if old.get("data_fingerprint") != data:
                raise RunConflict(f"output folder {self.path} holds a run on other data (utterances, ratings or label "
                                  f"settings differ) with the same config; nothing was changed. Pass --overwrite to "
                                  f"replace it, or choose another --output-dir")
            self.resumed = True
        if self.is_main:
            if self.overwrite and self.path.is_dir():
                for p in self.path.iterdir():
                    if p.name not in CACHE_DIRS:
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                old = None
            self.path.mkdir(parents=True, exist_ok=True)
            invocation = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": COMMAND or [sys.executable] + sys.argv,
                          "versions": versions(), "git_commit": _git_commit()}
            record = {"recipe": self.recipe, "data_fingerprint": data, "config_items": self.config_items,
                      "invocations": (old or {}).get("invocations", []) + [invocation]}
            atomic_write_text(self.path / "config.yaml", dump_yaml(self.config))
            write_json(self.path / RUN_FILE, record)
            self._attach_log()
            if self.resumed:
                say(f"{self.path}: same config and data as before: resuming")
        return self

    # -- logging ------------------------------------------------------------------------------------------------
    def _attach_log(self) -> None:
        handler = logging.FileHandler(self.path / "run.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handler.setLevel(logging.DEBUG)
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)
        self._handler = handler

    def close(self) -> None:
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- results ------------------------------------------------------------------------------------------------
    def results(self) -> Optional[dict]:
        f = self.path / "results.json"
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None

    def merge_results(self, new: Dict[str, Any], key: str) -> Dict[str, Any]:
        """``new`` with the entries of ``results.json[key]`` that ``new[key]`` does not replace (``--run``)."""
        old = self.results() or {}
        merged = dict(new)
        merged[key] = {**old.get(key, {}), **new.get(key, {})}
        return merged

    def save(self, results: Dict[str, Any], table: str) -> None:
        """On rank 0: print ``table`` and write ``results.json`` and ``table.txt`` (atomically)."""
        if not self.is_main:
            return
        say(table)
        write_json(self.path / "results.json", results)
        atomic_write_text(self.path / "table.txt", table + "\n")


def read_config(run_dir) -> Dict[str, Any]:
    """The ``config.yaml`` of a run folder as plain data (FileNotFoundError naming the folder otherwise)."""
    f = Path(run_dir) / "config.yaml"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: is {run_dir} a `sermodels train` output folder?")
    return load_yaml(f.read_text(encoding="utf-8"))


def trainer_dirs(run_dir) -> List[Path]:
    """Every trainer output folder (one with ``metrics.json``) under ``run_dir``, sorted."""
    return sorted(p.parent for p in Path(run_dir).rglob("metrics.json"))
