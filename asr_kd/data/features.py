"""40-dim log-mel filterbank features (Kaldi-compatible) and CMVN statistics.

Features are lhotse's ``Fbank`` (a torch port of Kaldi's ``compute-fbank-feats``): 25 ms Povey
window, 10 ms shift, pre-emphasis 0.97, no dither, ``snip_edges=False`` (one frame per 10 ms,
``num_frames = round(duration / 0.01)``), 40 mel bins over

| sample rate | mel range |
|---|---|
| 16 kHz | 20 Hz to 7600 Hz (``high_freq = -400``, Kaldi's usual wide-band setting) |
| 8 kHz | 20 Hz to 3800 Hz (``high_freq = -200``) |

They are stored with lilcom compression in ``LilcomChunkyWriter`` archives, one per job chunk,
written to a temporary name and renamed when complete; the cuts manifest that points at them is
written last, so its existence means the stage is done. A run that recomputes first removes the
old manifest, and its workers die with it (``kill -9`` of the command leaves no worker writing);
a manifest whose archives are missing, shorter than it says or newer than it is not taken as done
but redone. A cut whose audio cannot be read, or that is too short for a single frame, or whose
features are not finite, is skipped with a warning that names it, and counted in
``{corpus}_fbank_{split}.json``.

CMVN statistics (count, sum, sum of squares per speaker and for the whole set) are computed where
features are used (:func:`compute_cmvn_stats` over the cuts a model trains or decodes on), and
:class:`Cmvn` applies them.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter
from lhotse.features.base import Features
from lhotse.utils import compute_num_frames
from tqdm import tqdm

from asr_kd.utils import Pathlike, atomic_path, die_with_parent, load_cuts, outputs_exist, write_json

log = logging.getLogger(__name__)

NUM_MEL_BINS = 40


def fbank_config(sampling_rate: int, num_mel_bins: int = NUM_MEL_BINS) -> FbankConfig:
    """The project's fbank settings for a corpus at ``sampling_rate`` (see the module docstring)."""
    high_freq = -400.0 if sampling_rate >= 16000 else -200.0
    return FbankConfig(
        sampling_rate=sampling_rate,
        num_filters=num_mel_bins,
        low_freq=20.0,
        high_freq=high_freq,
        dither=0.0,
        snip_edges=False,
    )


def mel_range(sampling_rate: int) -> Tuple[float, float]:
    cfg = fbank_config(sampling_rate)
    return cfg.low_freq, sampling_rate / 2 + cfg.high_freq


def _extract_chunk(cuts_jsonl: List[dict], storage_path: str, sampling_rate: int) -> Tuple[List[dict], List[Tuple[str, str]]]:
    """Worker: features for one chunk of cuts into one lilcom archive. Returns (cuts, failures)."""
    torch.set_num_threads(1)
    extractor = Fbank(fbank_config(sampling_rate))
    done, failed = [], []
    final = Path(storage_path)
    with atomic_path(final) as tmp:
        with LilcomChunkyWriter(tmp) as writer:
            for d in cuts_jsonl:
                cut = CutSet.from_dicts([d])[0]
                source = cut.recording.sources[0].source if cut.has_recording else cut.id
                try:
                    samples = cut.load_audio()
                except Exception as e:
                    failed.append((source, f"unreadable audio: {type(e).__name__}: {e}"))
                    continue
                if not np.isfinite(samples).all():
                    failed.append((source, "audio has NaN/inf samples"))
                    continue
                if compute_num_frames(cut.duration, extractor.frame_shift, cut.sampling_rate) == 0:
                    failed.append((source, f"too short for one frame ({cut.duration:.4f} s)"))
                    continue
                try:
                    feats = extractor.extract(samples, cut.sampling_rate)
                except Exception as e:
                    failed.append((source, f"feature extraction failed: {type(e).__name__}: {e}"))
                    continue
                if not np.isfinite(feats).all():
                    failed.append((source, "features are not finite"))
                    continue
                key = writer.write(cut.id, feats)
                features = Features(
                    start=cut.start,
                    duration=cut.duration,
                    type=extractor.name,
                    num_frames=feats.shape[0],
                    num_features=feats.shape[1],
                    frame_shift=extractor.frame_shift,
                    sampling_rate=cut.sampling_rate,
                    channels=0,
                    storage_type=writer.name,
                    storage_path=str(final),
                    storage_key=key,
                )
                cut.features = features
                done.append(cut.to_dict())
    return done, failed


def compute_fbank(
    cuts: CutSet,
    output_cuts: Pathlike,
    storage_dir: Pathlike,
    num_jobs: int = 2,
    chunk_size: int = 200,
    force: bool = False,
) -> CutSet:
    """Compute fbank for every cut; write ``output_cuts`` (cuts with features) and a report beside it."""
    output_cuts = Path(output_cuts)
    report_path = output_cuts.with_name(output_cuts.name.replace("_cuts_", "_fbank_").replace(".jsonl.gz", ".json"))
    if not force and outputs_exist(output_cuts, report_path):
        done = load_cuts(output_cuts)
        problem = archive_problem(done, output_cuts)
        if problem is None:
            log.info(f"{output_cuts} exists; skipping (use --force to redo)")
            return done
        log.warning(f"{output_cuts} is not complete ({problem}); computing it again")
    # No completion marker may outlive a run that rewrites the archives it points at.
    output_cuts.unlink(missing_ok=True)
    report_path.unlink(missing_ok=True)
    storage_dir = Path(storage_dir)
    storage_dir.mkdir(parents=True, exist_ok=True)
    stem = output_cuts.name.replace(".jsonl.gz", "")
    for tmp in storage_dir.glob(f".{stem}.*.tmp.*"):  # left by workers killed with an earlier run
        tmp.unlink()
    cut_list = list(cuts)
    if not cut_list:
        raise ValueError("no cuts to compute features for")
    rates = {c.sampling_rate for c in cut_list}
    if len(rates) != 1:
        raise ValueError(f"cuts have mixed sample rates {sorted(rates)}; resample them at preparation")
    (rate,) = rates
    chunks = [cut_list[i : i + chunk_size] for i in range(0, len(cut_list), chunk_size)]
    start = time.time()
    results: Dict[int, Tuple[List[dict], List[Tuple[str, str]]]] = {}
    pool = ProcessPoolExecutor(max_workers=num_jobs, initializer=die_with_parent, initargs=(os.getpid(),))
    with pool, tqdm(total=len(cut_list), desc=f"fbank {stem}", unit="cut") as bar:
        futures = {
            pool.submit(_extract_chunk, [c.to_dict() for c in chunk], str(storage_dir / f"{stem}.{i:04d}.lca"), rate): (i, len(chunk))
            for i, chunk in enumerate(chunks)
        }
        for fut in as_completed(futures):
            i, n = futures[fut]
            results[i] = fut.result()
            bar.update(n)
    wall = time.time() - start
    done = [d for i in sorted(results) for d in results[i][0]]
    failed = [f for i in sorted(results) for f in results[i][1]]
    for source, reason in failed:
        log.warning(f"fbank: skipping {source}: {reason}")
    if not done:
        raise RuntimeError(f"fbank: no cut produced features ({len(failed)} failures)")
    out = CutSet.from_dicts(done)
    frames = sum(c.num_frames for c in out)
    audio_s = sum(c.duration for c in out)
    report = {
        "cuts": len(out),
        "skipped": len(failed),
        "skipped_items": [list(f) for f in failed],
        "frames": frames,
        "hours": round(audio_s / 3600, 4),
        "wall_s": round(wall, 2),
        "frames_per_s": round(frames / wall, 1),
        "real_time_factor": round(wall / audio_s, 5),
        "num_jobs": num_jobs,
        "sampling_rate": rate,
        "mel_range_hz": list(mel_range(rate)),
        "config": fbank_config(rate).to_dict(),
    }
    write_json(report_path, report)
    with atomic_path(output_cuts) as tmp:  # the completion marker: last
        out.to_file(tmp)
    log.info(
        f"fbank {stem}: {len(out)} cuts, {frames} frames, {audio_s / 3600:.2f} h in {wall:.1f} s "
        f"(RTF {wall / audio_s:.4f}); skipped {len(failed)}"
    )
    return out


def archive_problem(cuts: CutSet, manifest: Path) -> Optional[str]:
    """Why the feature archives that ``cuts`` (read from ``manifest``) point at cannot be the ones
    it was written with, or None: an archive is missing, shorter than the furthest byte a cut
    reads (lilcom keys are "offset,chunk sizes..."), or modified after the manifest."""
    ends: Dict[str, int] = {}
    for c in cuts:
        if c.features is None:
            return f"cut {c.id} has no features"
        path, key = c.features.storage_path, c.features.storage_key
        end = sum(int(k) for k in key.split(",")) if c.features.storage_type == LilcomChunkyWriter.name else 0
        ends[path] = max(ends.get(path, 0), end)
    written = manifest.stat().st_mtime
    for path, end in sorted(ends.items()):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"{path} is missing"
        if st.st_size < end:
            return f"{path} holds {st.st_size} bytes, the manifest reads up to byte {end}"
        if st.st_mtime > written:
            return f"{path} was modified after the manifest"
    return None


# ---------------------------------------------------------------- CMVN


def cmvn_stats(items: Iterable[Tuple[str, np.ndarray]]) -> dict:
    """Per-speaker and global count / sum / sum of squares (float64) of ``(speaker, feats)`` items."""
    speakers: Dict[str, np.ndarray] = {}
    for spk, feats in items:
        feats = np.asarray(feats, dtype=np.float64)
        acc = speakers.setdefault(spk, np.zeros((3, feats.shape[1])))
        acc[0] += feats.shape[0]
        acc[1] += feats.sum(axis=0)
        acc[2] += (feats**2).sum(axis=0)
    total = sum(speakers.values())

    def pack(a: np.ndarray) -> dict:
        return {"count": int(a[0, 0]), "sum": a[1].tolist(), "sumsq": a[2].tolist()}

    return {"global": pack(total), "speakers": {s: pack(a) for s, a in sorted(speakers.items())}}


def compute_cmvn_stats(cuts: CutSet) -> dict:
    """:func:`cmvn_stats` of a CutSet's stored features (speaker from the first supervision)."""
    return cmvn_stats(
        (cut.supervisions[0].speaker if cut.supervisions and cut.supervisions[0].speaker else cut.id,
         cut.load_features())
        for cut in tqdm(cuts, desc="cmvn stats", unit="cut")
    )


class Cmvn:
    """Mean (and optionally variance) normalization from saved statistics.

    ``mode="speaker"`` uses the cut's speaker statistics (Kaldi's per-speaker CMVN, falling back
    to the global ones for an unknown speaker); ``mode="global"`` uses the set's statistics.
    """

    def __init__(self, stats: dict, mode: str = "speaker", norm_vars: bool = True, floor: float = 1e-6):
        if mode not in ("speaker", "global"):
            raise ValueError(f"CMVN mode must be 'speaker' or 'global', not {mode!r}")
        self.mode = mode
        self.norm_vars = norm_vars

        def moments(s: dict) -> Tuple[np.ndarray, np.ndarray]:
            n = max(s["count"], 1)
            mean = np.asarray(s["sum"]) / n
            var = np.maximum(np.asarray(s["sumsq"]) / n - mean**2, floor)
            return mean.astype(np.float32), (1.0 / np.sqrt(var)).astype(np.float32)

        self.global_ = moments(stats["global"])
        self.speakers = {k: moments(v) for k, v in stats.get("speakers", {}).items()}

    def __call__(self, feats: np.ndarray, speaker: Optional[str] = None) -> np.ndarray:
        mean, inv_std = self.global_
        if self.mode == "speaker" and speaker in self.speakers:
            mean, inv_std = self.speakers[speaker]
        out = feats - mean
        return out * inv_std if self.norm_vars else out

    def apply_to_cut(self, cut) -> np.ndarray:
        spk = cut.supervisions[0].speaker if cut.supervisions else None
        return self(cut.load_features(), spk)


# ---------------------------------------------------------------- CLI: asr-kd fbank


def add_arguments(parser) -> None:
    parser.add_argument("manifest_dir", type=Path, help="where `asr-kd prepare` wrote {corpus}_cuts_{split}.jsonl.gz")
    parser.add_argument("output_dir", type=Path, help="where cuts with features and their archives go")
    parser.add_argument("--corpus", required=True, help="the {corpus} prefix of the manifests (yesno, fsdd, ...)")
    parser.add_argument("--splits", nargs="+", default=["train", "dev", "test"], help="splits to featurize")
    parser.add_argument("--num-jobs", type=int, default=2, help="feature-extraction processes")
    parser.add_argument("--force", action="store_true", help="recompute even if complete features exist")


def run(args) -> int:
    for split in args.splits:
        src = args.manifest_dir / f"{args.corpus}_cuts_{split}.jsonl.gz"
        out = args.output_dir / f"{args.corpus}_cuts_{split}.jsonl.gz"
        compute_fbank(load_cuts(src, "run the prepare stage first"), out, args.output_dir / f"feats_{split}",
                      num_jobs=args.num_jobs, force=args.force)
    return 0
