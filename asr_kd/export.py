"""``asr-kd export``: a trained model as one self-describing directory that decodes anywhere.

::

    asr-kd export --model exp/dnn_seed{1,2,3,4}/final.pt --lang-dir data/lang --lm data/lm/G_3gram.fst \\
        --out-dir export/ensemble [--archive]
    asr-kd decode --model-dir export/ensemble --audio a.wav        # on another machine or checkout

The directory holds everything decoding needs, with paths relative to itself (move or copy it
anywhere; ``--archive`` also writes ``OUT.tar.gz``, which ``decode --model-dir`` takes as it is)::

    manifest.json        what is inside: kind, files with sha256 and size, the producing command,
                         asr-kd version and commit, where each part came from (written last: its
                         presence marks a complete export)
    final.mdl            a GMM export: the GMM-HMM itself
    dnn_1.pt ...         a DNN export: the network(s), several = an ensemble (mean of posteriors);
                         their metadata name this directory as their senone system ("gmm_dir": ".",
                         resolved beside the file) and carry the senone log-priors
    dnn.torchscript.pt   a DNN export: the network(s) as TorchScript (see :class:`ScriptedAcousticModel`)
    tree.json            the context dependency (decision tree) that defines the senones
    transitions.json     the HMM topology and transition model
    priors.json          senone log-priors (a DNN's: what decoding subtracts; a GMM's: from its alignment)
    phones.json          the phone set the model was trained with (:func:`asr_kd.model_info.phone_table`)
    features.json        sampling rate, fbank (and a GMM's MFCC) settings, and the CMVN rule
    lang/                optional: the lang directory (words.txt, L_disambig.fst, phones.txt, ...)
    lm/G_*.fst           optional: the LM
    graph/               optional: the HCLG built from them (HCLG.pt, HCLG.fst, HCLG.json), so that
                         decoding needs no graph build

**CMVN** is per speaker and computed at decode time: nothing from training is stored. Each
speaker of a decoded set is normalized with the statistics of their own utterances in that set
(all of a speaker's cuts with ``--cuts``; each file its own speaker with ``--audio``), so an
unseen speaker is treated as every training speaker was. A DNN normalizes mean and variance of
the 40 fbank; a GMM normalizes the mean of its MFCCs (``features.json`` says which).

``decode --model-dir`` checks the manifest first: a missing or altered file is one error naming it.
"""
from __future__ import annotations

import argparse
import atexit
import copy
import hashlib
import json
import logging
import math
import os
import platform
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import nn

import asr_kd
from asr_kd.decode.acoustic import load_scorer
from asr_kd.decode.graph import build_graph
from asr_kd.model_info import check_phones
from asr_kd.utils import Pathlike, UserError, atomic_path, read_json, write_json

log = logging.getLogger(__name__)

FORMAT = "asr-kd-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TORCHSCRIPT = "dnn.torchscript.pt"
GRAPH_FILES = ("HCLG.pt", "HCLG.fst", "HCLG.json", "words.txt")

TORCHSCRIPT_DOC = {
    "input": "one utterance's CMVN-normalized fbank, float32 [T, feat_dim] (unspliced: the network splices "
             "left_context + 1 + right_context frames itself, repeating the first and last frame at the edges, "
             "as in training)",
    "forward": "log-posteriors [T, num_senones] (an ensemble: the log of the members' mean posterior)",
    "loglikes": "forward(x) - log_priors: the pseudo log-likelihoods an HMM decoder takes",
    "attributes": "left_context, right_context, feat_dim, num_senones, num_members, log_priors",
    "load": "torch.jit.load(path); no asr-kd code needed",
}


# ---------------------------------------------------------------- TorchScript


class ScriptedAcousticModel(nn.Module):
    """The DNN(s) of a hybrid system as one TorchScript-able module.

    ``forward(feats)``: an utterance's CMVN-normalized fbank ``[T, feat_dim]`` (unspliced) ->
    log-posteriors ``[T, num_senones]``; frames are spliced inside (context windows clamped to the
    utterance, i.e. edge frames repeated, as :meth:`asr_kd.nnet.data.FrameSet.splice`), and an
    ensemble's members are combined by the mean of their posteriors, as
    :class:`asr_kd.decode.acoustic.DnnScorer` does. ``loglikes(feats)`` subtracts the senone
    log-priors (the scores decoding uses)."""

    def __init__(self, nets: Sequence[nn.Module], left_context: int, right_context: int, feat_dim: int,
                 log_priors: torch.Tensor):
        super().__init__()
        self.members = nn.ModuleList(nets)
        self.left_context, self.right_context, self.feat_dim = int(left_context), int(right_context), int(feat_dim)
        self.num_members = len(nets)
        self.num_senones = int(log_priors.numel())
        self.register_buffer("log_priors", log_priors.float().clone())

    @torch.jit.export
    def splice(self, feats: torch.Tensor) -> torch.Tensor:
        """[T, D] -> [T, (left + 1 + right) * D] context windows."""
        t = feats.shape[0]
        offsets = torch.arange(-self.left_context, self.right_context + 1, device=feats.device)
        win = torch.arange(t, device=feats.device)[:, None] + offsets[None, :]
        win = torch.clamp(win, 0, t - 1)
        return feats[win].reshape(t, -1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.splice(feats)
        out: List[torch.Tensor] = []
        for net in self.members:
            out.append(torch.log_softmax(net(x), -1))
        return torch.logsumexp(torch.stack(out), 0) - math.log(float(len(out)))

    @torch.jit.export
    def loglikes(self, feats: torch.Tensor) -> torch.Tensor:
        return self.forward(feats) - self.log_priors


def torchscript_model(models: Sequence, log_priors) -> torch.jit.ScriptModule:
    """:class:`ScriptedAcousticModel` of loaded :class:`asr_kd.nnet.model.Dnn` models, scripted."""
    cfg = models[0].cfg
    nets = [copy.deepcopy(m.net).cpu().float().eval() for m in models]
    module = ScriptedAcousticModel(nets, cfg.left_context, cfg.right_context, cfg.feat_dim,
                                   torch.as_tensor(log_priors, dtype=torch.float32))
    return torch.jit.script(module.eval())


# ---------------------------------------------------------------- writing an export


def cmvn_rule(kind: str) -> dict:
    """The CMVN of a model's features, as ``features.json`` records it."""
    what = ("mean and variance of the 40-dim log-mel fbank" if kind != "gmm"
            else "mean of the MFCCs computed from the fbank (no variance normalization), before deltas")
    return {"type": "per-speaker", "normalizes": what,
            "statistics": "computed at decode time from the decoded utterances; nothing from training is stored",
            "unseen_speakers": "normalized with the statistics of their own utterances in the decoded set: all of "
                               "a speaker's cuts with --cuts, each file alone with --audio"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def toolkit_version() -> dict:
    """asr-kd's version, and the git commit of its checkout (``dirty``: asr_kd/ has uncommitted changes)."""
    out = {"version": asr_kd.__version__, "commit": None, "dirty": None}
    here = Path(asr_kd.__file__).resolve().parent
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(here), *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=20, check=True).stdout.strip()
        out["commit"] = git("rev-parse", "HEAD") or None
        out["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no", "--", "."))
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an installed package)
    return out


def _copy(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found: cannot export without it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _export_dnn(scorer, model_paths: Sequence[Path], tmp: Path) -> List[str]:
    """The DNN file(s) with their metadata pointing into the export."""
    for src, member in zip(model_paths, scorer.model.members):
        if Path(member.meta["gmm_dir"]).resolve() != scorer.gmm_dir.resolve():
            raise UserError(f"{src} was trained on the senones of {member.meta['gmm_dir']} but {model_paths[0]} on "
                            f"those of {scorer.gmm_dir}: an ensemble needs one senone set")
    names = []
    for k, src in enumerate(model_paths, 1):
        d = torch.load(src, map_location="cpu")
        meta = dict(d.get("meta", {}))
        provenance = {key: meta.pop(key) for key in ("train_cuts", "teachers") if key in meta}
        provenance.update(exported_from=str(Path(src).resolve()), gmm_dir=str(meta.get("gmm_dir")))
        meta.update(gmm_dir=".", paths_relative_to="model_file", features=scorer.features, provenance=provenance)
        if scorer.priors != "model":  # the priors decoding divides by, e.g. the model's own mean posterior
            meta.update(log_priors=scorer.log_priors.tolist(), priors_from=scorer.priors)
        d["meta"] = meta
        names.append(f"dnn_{k}.pt")
        torch.save(d, tmp / names[-1])
    return names


def _export_gmm(scorer, tmp: Path) -> List[str]:
    """final.mdl, with its feature settings recorded in it (an older model that lacks them gets them)."""
    if scorer.model.info.get("features"):
        _copy(scorer.gmm_dir / "final.mdl", tmp / "final.mdl")
    else:
        scorer.model.info = {**scorer.model.info, "features": scorer.features}
        scorer.model.save(tmp / "final.mdl")
    return ["final.mdl"]


def export_model(models: Sequence[Pathlike], out_dir: Pathlike, lang_dir: Optional[Pathlike] = None,
                 lm: Optional[Pathlike] = None, graph_dir: Optional[Pathlike] = None, graph: bool = True,
                 torchscript: bool = True, archive: bool = False, force: bool = False,
                 command: Optional[str] = None, priors: Optional[Pathlike] = None) -> dict:
    """Write the export directory ``out_dir`` (see the module doc) and return its manifest.

    ``models``: a GMM directory, or DNN ``.pt`` files (several: an ensemble). With ``lang_dir``
    and ``lm`` the export also holds them and (``graph``) their HCLG: copied from ``graph_dir``
    (default: where ``asr-kd decode`` caches it, ``<GMM dir>/graph_<LM>``) when its fingerprint
    still matches, else built. Written beside ``out_dir`` and renamed into place, so an
    interrupted export leaves nothing that looks complete. An existing ``out_dir`` is replaced only
    with ``force``, and only if it is an export. ``priors``: DNNs, a JSON of senone log-priors (``asr-kd
    nnet priors``) that the exported model divides its posteriors by instead of its own."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise UserError(f"{out_dir} exists: use --force to replace it")
    if out_dir.exists() and not (out_dir / MANIFEST).is_file() and any(out_dir.iterdir()):
        raise UserError(f"{out_dir} exists and is not an asr-kd export (no {MANIFEST}): not replacing it")
    if lm is not None and lang_dir is None:
        raise UserError("--lm needs --lang-dir (the LM's word table)")
    model_paths = [Path(m) for m in models]
    scorer = load_scorer(model_paths, "cpu", priors)
    kind = "gmm" if scorer.kind == "gmm" else ("dnn" if len(model_paths) == 1 else "dnn-ensemble")
    gmm_dir = scorer.gmm_dir
    if lang_dir is not None:  # a lang over other phones would make a graph that decodes garbage
        check_phones(scorer.phones, scorer.name, lang_dir, scorer.trans.loop.keys())

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        acoustic = _export_gmm(scorer, tmp) if kind == "gmm" else _export_dnn(scorer, model_paths, tmp)
        for name in ("tree.json", "transitions.json"):
            _copy(gmm_dir / name, tmp / name)
        write_json(tmp / "phones.json", scorer.phones)
        if scorer.phones is None:
            log.warning(f"{scorer.name} records no phone set (trained before it was saved): phones.json is null and "
                        "a lang is checked against the phone ids of its transition model only")
        write_json(tmp / "features.json", {**scorer.features, "cmvn": cmvn_rule(kind)})
        if kind == "gmm":
            gmm_priors = gmm_dir / "priors.json"
            priors = read_json(gmm_priors) if gmm_priors.is_file() else None
            if priors is not None:
                priors["used_for"] = "not used by GMM decoding: the senone frequencies of the GMM's training alignment"
        else:
            priors = {"num_pdfs": scorer.num_pdfs, "log_priors": scorer.log_priors.tolist(),
                      "used_for": "subtracted from the DNN log-posteriors in decoding",
                      "from": scorer.priors if scorer.priors != "model" else "the first model"}
        if priors is not None:
            write_json(tmp / "priors.json", priors)
        script = None
        if kind != "gmm" and torchscript:
            torch.jit.save(torchscript_model(list(scorer.model.members), scorer.log_priors), str(tmp / TORCHSCRIPT),
                           _extra_files={"asr_kd.json": json.dumps({**TORCHSCRIPT_DOC, "features": scorer.features,
                                                                    "cmvn": cmvn_rule(kind)})})
            script = {"file": TORCHSCRIPT, **TORCHSCRIPT_DOC}
        lm_rel = graph_rel = None
        if lang_dir is not None:
            shutil.copytree(lang_dir, tmp / "lang")
        if lm is not None:
            lm_rel = f"lm/{Path(lm).name}"
            _copy(Path(lm), tmp / lm_rel)
        if lm is not None and graph:
            src = Path(graph_dir) if graph_dir else gmm_dir / f"graph_{Path(lm).stem.removeprefix('G_')}"
            if all((src / f).is_file() for f in GRAPH_FILES):
                for f in GRAPH_FILES:
                    _copy(src / f, tmp / "graph" / f)
            hclg = tmp / "graph" / "HCLG.pt"
            built_before = hclg.stat().st_mtime_ns if hclg.is_file() else None
            build_graph(tmp / "lang", tmp / lm_rel, scorer.ctx_dep, scorer.trans, tmp / "graph",
                        [tmp / "tree.json", tmp / "transitions.json"], phones=scorer.phones, model_name=scorer.name)
            reused = built_before is not None and hclg.stat().st_mtime_ns == built_before
            log.info(f"HCLG {'copied from ' + str(src) if reused else 'built'} into the export")
            graph_rel = "graph"
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "acoustic_model": acoustic,
            "num_pdfs": scorer.num_pdfs,
            "context_width": scorer.ctx_dep.context_width,
            "tree": "tree.json",
            "transitions": "transitions.json",
            "priors": "priors.json" if priors is not None else None,
            "phones": "phones.json",
            "features": "features.json",
            "sampling_rate": scorer.features["sampling_rate"],
            "cmvn": cmvn_rule(kind),
            "torchscript": script,
            "lang": "lang" if lang_dir is not None else None,
            "lm": lm_rel,
            "graph": graph_rel,
            "decode": "asr-kd decode --model-dir THIS_DIR (--cuts CUTS --out-dir DIR | --audio FILE...)"
                      + ("" if graph_rel else " --lang-dir LANG --lm G.fst"),
            "source": {"models": [str(p.resolve()) for p in model_paths], "gmm_dir": str(gmm_dir.resolve()),
                       "lang_dir": str(Path(lang_dir).resolve()) if lang_dir else None,
                       "lm": str(Path(lm).resolve()) if lm else None},
            "command": command,
            "cwd": str(Path.cwd()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "asr_kd": toolkit_version(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "files": _files(tmp),
        }
        write_json(tmp / MANIFEST, manifest)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if archive:
        path = archive_path(out_dir)
        with atomic_path(path) as t, tarfile.open(t, "w:gz") as tar:
            tar.add(out_dir, arcname=out_dir.name)
        log.info(f"archive: {path}")
    size = sum(f["bytes"] for f in manifest["files"].values())
    log.info(f"exported {kind} ({', '.join(acoustic)}; lang {'yes' if lang_dir else 'no'}, LM {lm_rel or 'no'}, "
             f"graph {'yes' if graph_rel else 'no'}) to {out_dir}: {len(manifest['files'])} files, {size / 1e6:.1f} MB")
    return manifest


def archive_path(out_dir: Pathlike) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".tar.gz")


# ---------------------------------------------------------------- reading an export


@dataclass
class Export:
    root: Path
    manifest: dict

    def _path(self, key: str) -> Optional[Path]:
        value = self.manifest.get(key)
        return self.root / value if value else None

    @property
    def models(self) -> List[Path]:
        """What ``--model`` takes: the directory itself for a GMM, else its DNN files."""
        if self.manifest["kind"] == "gmm":
            return [self.root]
        return [self.root / name for name in self.manifest["acoustic_model"]]

    @property
    def lang_dir(self) -> Optional[Path]:
        return self._path("lang")

    @property
    def lm(self) -> Optional[Path]:
        return self._path("lm")

    @property
    def graph_dir(self) -> Optional[Path]:
        return self._path("graph")


def _extract(archive: Path) -> Path:
    """A .tar.gz export unpacked into a temporary directory (removed at exit); its top directory."""
    tmp = Path(tempfile.mkdtemp(prefix="asr-kd-export-"))
    atexit.register(shutil.rmtree, tmp, True)
    try:
        with tarfile.open(archive) as tar:
            try:
                tar.extractall(tmp, filter="data")  # refuses absolute paths, .., links out of tmp
            except TypeError:  # Python without extraction filters
                for m in tar.getmembers():
                    if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                        raise ValueError(f"{archive}: unsafe member {m.name!r}")
                tar.extractall(tmp)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UserError(f"{archive}: not a readable .tar.gz export ({e})") from e
    tops = [p for p in tmp.iterdir()]
    if len(tops) == 1 and tops[0].is_dir():
        return tops[0]
    return tmp


def load_export(path: Pathlike, verify: bool = True) -> Export:
    """An export directory (or its .tar.gz), checked against its manifest: a missing file, or one
    whose size or sha256 differ (``verify``), is an error naming it."""
    root = Path(path)
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        root = _extract(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{path}: no such export directory (asr-kd export writes one)")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: {path} is not a directory written by asr-kd export, "
                                "or an incomplete copy of one")
    try:
        manifest = read_json(manifest_path)
    except json.JSONDecodeError as e:
        raise UserError(f"{manifest_path}: corrupt ({e})") from e
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{manifest_path}: not an asr-kd export manifest")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{manifest_path}: export format {manifest['format_version']} is newer than this asr-kd "
                        f"reads ({FORMAT_VERSION}): update asr-kd")
    for rel, info in manifest["files"].items():
        p = root / rel
        if not p.is_file():
            raise FileNotFoundError(f"{path}: incomplete export: {rel} (listed in {MANIFEST}) is missing")
        if p.stat().st_size != info["bytes"] or (verify and _sha256(p) != info["sha256"]):
            raise UserError(f"{path}: {rel} differs from the checksum in {MANIFEST} (changed or damaged copy)")
    return Export(root, manifest)


def decode_inputs(args) -> Export:
    """``asr-kd decode --model-dir``: fill ``args.model`` and, where not given, ``--lang-dir``,
    ``--lm`` and ``--graph-dir`` from the export. A lang or LM of the user's own gets its graph
    cached in ``<export>/graph_<LM>`` instead (built once), never over the export's own graph."""
    export = load_export(args.model_dir)
    own = args.lang_dir is None and args.lm is None
    args.model = [str(m) for m in export.models]
    if args.lang_dir is None:
        if export.lang_dir is None:
            raise UserError(f"{args.model_dir} holds no lang (exported without --lang-dir): give --lang-dir")
        args.lang_dir = export.lang_dir
    if args.lm is None:
        if export.lm is None:
            raise UserError(f"{args.model_dir} holds no LM (exported without --lm): give --lm")
        args.lm = export.lm
    if args.graph_dir is None:
        if own and export.graph_dir is not None:
            args.graph_dir = export.graph_dir
        else:
            args.graph_dir = export.root / f"graph_{Path(args.lm).stem.removeprefix('G_')}"
    log.info(f"{args.model_dir}: {export.manifest['kind']} export ({', '.join(export.manifest['acoustic_model'])}), "
             f"lang {args.lang_dir}, LM {args.lm}, graph {args.graph_dir}")
    return export


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", nargs="+", required=True,
                        help="a GMM dir (final.mdl), or DNN final.pt file(s): several make an ensemble")
    parser.add_argument("--out-dir", type=Path, required=True, help="the export directory to write")
    parser.add_argument("--lang-dir", type=Path,
                        help="include this lang directory (checked against the model's phones)")
    parser.add_argument("--lm", type=Path, help="include this G.fst (needs --lang-dir); with both, the HCLG too")
    parser.add_argument("--graph-dir", type=Path,
                        help="an HCLG already built for this model, lang and LM, copied when it is up to date, "
                             "else the graph is built (when not given: <GMM dir>/graph_<LM name without 'G_'>, "
                             "where asr-kd decode caches it)")
    parser.add_argument("--no-graph", action="store_true", help="do not include the HCLG (decoding builds it)")
    parser.add_argument("--no-torchscript", action="store_true", help="no TorchScript copy of a DNN")
    parser.add_argument("--archive", action="store_true", help="also write OUT_DIR.tar.gz")
    parser.add_argument("--priors", type=Path,
                        help="DNNs: a JSON of senone log_priors (asr-kd nnet priors) the export divides the "
                             "posteriors by, instead of those saved in the model (as asr-kd decode --priors)")
    parser.add_argument("--force", action="store_true", help="replace an existing export at --out-dir")


def _command(args) -> str:
    """The command line that does this export, from its parsed arguments."""
    words = ["asr-kd", "export", "--model", *map(str, args.model), "--out-dir", str(args.out_dir)]
    for flag in ("lang_dir", "lm", "graph_dir", "priors"):
        if getattr(args, flag) is not None:
            words += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    words += [f"--{f.replace('_', '-')}" for f in ("no_graph", "no_torchscript", "archive", "force")
              if getattr(args, f)]
    return shlex.join(words)


def run(args) -> int:
    export_model(args.model, args.out_dir, args.lang_dir, args.lm, args.graph_dir, graph=not args.no_graph,
                 torchscript=not args.no_torchscript, archive=args.archive, force=args.force, command=_command(args),
                 priors=args.priors)
    return 0
