"""A user's own data in: a Kaldi data directory, or lhotse manifests, made into the manifests that
``asr-kd prepare CORPUS`` writes, so that every later stage takes them as it takes a corpus::

    asr-kd prepare kaldi  DATA_DIR OUT_DIR [--name NAME] [--split SPLIT] [--sampling-rate R] [--dev-speakers K]
    asr-kd prepare lhotse MANIFEST OUT_DIR [--supervisions SUPS] [--name NAME] [--split SPLIT] [--sampling-rate R]

write ``OUT_DIR/{name}_{recordings,supervisions,cuts}_{split}.jsonl.gz`` (one cut per utterance,
its id the utterance id) and add the split to ``OUT_DIR/{name}_prepare.json``. ``--dev-speakers K``
holds K whole speakers (the same ones on every run) out as split ``dev`` for tuning, e.g. the LM
weight of a set that has no dev set of its own.

**Kaldi data dir.** ``wav.scp`` is required; ``segments``, ``text``, ``utt2spk`` and ``spk2gender``
are optional. A ``wav.scp`` entry is a file path (a relative one is looked up under ``--audio-root``,
else in the current directory as Kaldi does, else beside the data dir, and stored absolute) or a
pipe command ``CMD |``. A pipe is run once here (bash, ``pipefail``) to check its exit status and
read its length and rate, and is stored as lhotse's ``command`` audio source: later stages run it
again, in their own current directory, whenever they read the audio. Lhotse's own
``lhotse.kaldi.load_kaldi_data_dir`` is not used because it takes one sampling rate for the whole
directory (a 44.1 kHz file in a 16 kHz set would get a wrong duration), gives up when a fifth of
the files fail and asserts on missing ``text``/``utt2spk`` entries. Without ``utt2spk`` every
utterance is its own speaker; without ``text`` the set is for decoding only (no WER).

**Lhotse manifests.** A cuts manifest, or a recordings manifest with ``--supervisions``, is taken
as it is and put through the same checks (audio files present, segment times inside the
recording, transcripts normalized, empty ones skipped) and the same resampling.

**Sampling rate.** ``--sampling-rate R`` (e.g. the rate the model was trained at) resamples every
recording at another rate, once, in the manifest (lhotse's ``Recording.resample``: the audio files
are not rewritten); the log says how many and from which rates. Without it a set at one rate keeps
it, and a set at mixed rates is resampled to its most common rate, with a warning.

**Bad input.** A missing ``wav.scp`` (or data dir) is an error. Each other kind of problem (audio
that is missing or cannot be read, a pipe command that fails, empty audio, a segment of a recording
that is not there or outside it, an utterance in ``text`` with no audio, an utterance with no or an
empty transcript, a duplicate id) gets one warning naming the first few items and the count; the
items are listed in the report and the rest is processed. Only when nothing usable remains is it an
error (exit status 1). Every file is written atomically, the cuts manifest last.
"""
from __future__ import annotations

import io
import logging
import random
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest
from lhotse.audio import AudioSource

from asr_kd.data.text import normalize_text
from asr_kd.utils import Pathlike, UserError, atomic_path, exclusive_lock, read_json, write_json

log = logging.getLogger(__name__)

NAMED = 5  # items named in a warning; the report lists all


class Problems:
    """Bad input, by kind: one warning per kind (the first few items named, all counted)."""

    def __init__(self) -> None:
        self.kinds: Dict[str, List[Tuple[str, str]]] = {}

    def add(self, kind: str, item: str, detail: str = "") -> None:
        self.kinds.setdefault(kind, []).append((item, detail))

    def warn(self, where: str) -> None:
        for kind, items in self.kinds.items():
            shown = ", ".join(f"{i} ({d})" if d else i for i, d in items[:NAMED])
            more = f" and {len(items) - NAMED} more" if len(items) > NAMED else ""
            log.warning(f"{where}: {len(items)} {kind}, skipped: {shown}{more}")

    def counts(self) -> Dict[str, int]:
        return {k: len(v) for k, v in self.kinds.items()}

    def items(self) -> List[List[str]]:
        return [[i, f"{k}: {d}" if d else k] for k, v in self.kinds.items() for i, d in v]


def read_table(path: Path, problems: Problems) -> Dict[str, str]:
    """A Kaldi table (``KEY VALUE...``); a key given twice keeps its first line and is reported."""
    table: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(None, 1)
            if not parts:
                continue
            if parts[0] in table:
                problems.add(f"duplicate ids in {path.name}", parts[0])
                continue
            table[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return table


# ---------------------------------------------------------------- audio


def _resolve(path: str, roots: Iterable[Path]) -> Path:
    p = Path(path)
    if p.is_absolute():
        return p
    candidates = [r / p for r in roots]
    return next((c for c in candidates if c.exists()), candidates[0]).absolute()


def probe_command(rec_id: str, command: str) -> Recording:
    """Run a ``wav.scp`` pipe command once; a Recording that lhotse reads by running it again.
    Raises RuntimeError when it fails or its output is not audio."""
    shell = shutil.which("bash")
    argv = [shell, "-o", "pipefail", "-c", command] if shell else ["sh", "-c", command]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"exit status {proc.returncode}" + (f": {err[-1]}" if err else ""))
    try:
        samples, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for bytes that are not audio
        raise RuntimeError(f"output is not audio ({type(e).__name__}: {e})") from None
    return Recording(id=rec_id, sources=[AudioSource(type="command", channels=list(range(samples.shape[1])),
                                                     source=command)],
                     sampling_rate=int(rate), num_samples=samples.shape[0], duration=samples.shape[0] / rate)


def kaldi_recordings(wav: Dict[str, str], roots: List[Path], problems: Problems) -> Dict[str, Recording]:
    recordings = {}
    for rec_id, spec in wav.items():
        if not spec:
            problems.add("wav.scp entries without audio", rec_id)
            continue
        if spec.endswith("|"):
            command = spec[:-1].strip()
            try:
                rec = probe_command(rec_id, command)
            except RuntimeError as e:
                problems.add("pipe commands that failed", rec_id, f"{command}: {e}")
                continue
        else:
            path = _resolve(spec, roots)
            if not path.is_file():
                problems.add("missing audio files", rec_id, str(path))
                continue
            try:
                rec = Recording.from_file(path, recording_id=rec_id)
            except Exception as e:  # soundfile / audioread raise many types for corrupt files
                problems.add("unreadable audio files", rec_id, f"{path}: {type(e).__name__}: {e}")
                continue
        if rec.num_samples <= 0 or rec.duration <= 0:
            problems.add("empty recordings", rec_id, spec)
            continue
        recordings[rec_id] = rec
    return recordings


# ---------------------------------------------------------------- utterances


def check_supervisions(candidates: Iterable[SupervisionSegment], recordings: Dict[str, Recording],
                       known: Iterable[str], problems: Problems, require_text: bool) -> List[SupervisionSegment]:
    """The supervisions that are usable: their recording is there, their times inside it, their
    transcript (when ``require_text``) non-empty after normalization. ``known`` are the ids of
    every recording listed, usable or not (a segment of an unusable one is not reported again)."""
    known = set(known)
    out, seen = [], set()
    for s in candidates:
        if s.id in seen:
            problems.add("duplicate utterance ids", s.id)
            continue
        rec = recordings.get(s.recording_id)
        if rec is None:
            if s.recording_id not in known:
                problems.add("utterances whose recording is not listed", s.id, s.recording_id)
            continue  # an unusable recording: reported with it
        end = rec.duration if s.duration < 0 else s.start + s.duration
        if s.start < 0 or end <= s.start or end > rec.duration + 0.01:
            problems.add("segments outside their recording", s.id,
                         f"{s.start:.2f}-{end:.2f} s of {rec.duration:.2f} s")
            continue
        text = None
        if require_text:
            if s.text is None:
                problems.add("utterances without a transcript", s.id)
                continue
            text = normalize_text(s.text)
            if not text:
                problems.add("empty transcripts", s.id)
                continue
        seen.add(s.id)
        out.append(SupervisionSegment(id=s.id, recording_id=s.recording_id, start=s.start,
                                      duration=min(end, rec.duration) - s.start, channel=0, text=text,
                                      speaker=s.speaker or s.id, gender=s.gender, language=s.language))
    return out


def kaldi_supervisions(data_dir: Path, wav: Dict[str, str], usable: Iterable[str],
                       problems: Problems) -> Tuple[List[SupervisionSegment], bool]:
    """Candidate supervisions of a data dir (unchecked) and whether it has transcripts. ``usable``:
    the recordings that can be read (only their utterances are said to lack a speaker)."""
    def optional(name: str) -> Optional[Dict[str, str]]:
        return read_table(data_dir / name, problems) if (data_dir / name).is_file() else None

    text, utt2spk, spk2gender = optional("text"), optional("utt2spk"), optional("spk2gender") or {}
    has_segments = (data_dir / "segments").is_file()
    if has_segments:
        utts = []
        for utt, rest in read_table(data_dir / "segments", problems).items():
            fields = rest.split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                problems.add("malformed segments lines", utt, rest)
                continue
            utts.append((utt, rec, start, -1.0 if end == -1 else end - start))
    else:
        utts = [(utt, utt, 0.0, -1.0) for utt in wav]
    if text is None:
        log.warning(f"{data_dir}: no text file: the set has no transcripts (decoding only, no WER)")
    else:
        ids = {u for u, *_ in utts}
        for utt in text:
            if utt not in ids:
                problems.add(f"utterances in text with no audio (not in {'segments' if has_segments else 'wav.scp'})", utt)
    if utt2spk is None:
        log.info(f"{data_dir}: no utt2spk: each utterance is its own speaker")
        utt2spk = {}
    else:
        usable = set(usable)
        unknown = [u for u, rec, *_ in utts if u not in utt2spk and rec in usable]
        if unknown:
            log.warning(f"{data_dir}/utt2spk: {len(unknown)} utterances not listed, each its own speaker: "
                        f"{', '.join(unknown[:NAMED])}{' ...' if len(unknown) > NAMED else ''}")
    sups = []
    for utt, rec, start, duration in utts:
        spk = utt2spk.get(utt) or utt
        sups.append(SupervisionSegment(id=utt, recording_id=rec, start=start, duration=duration, channel=0,
                                       text=None if text is None else text.get(utt), speaker=spk,
                                       gender=spk2gender.get(spk) or None, language="English"))
    return sups, text is not None


# ---------------------------------------------------------------- resampling and writing


def target_rate(recordings: Iterable[Recording], sampling_rate: Optional[int], where: str) -> int:
    rates = Counter(r.sampling_rate for r in recordings)
    if sampling_rate:
        return int(sampling_rate)
    if len(rates) == 1:
        return next(iter(rates))
    rate = rates.most_common(1)[0][0]
    log.warning(f"{where}: recordings at mixed rates {dict(sorted(rates.items()))}: resampling to the most common, "
                f"{rate} Hz (give --sampling-rate, e.g. the model's rate, to choose)")
    return rate


def paths(output_dir: Path, name: str, split: str) -> Dict[str, Path]:
    return {kind: output_dir / f"{name}_{kind}_{split}.jsonl.gz" for kind in ("recordings", "supervisions", "cuts")}


def finish(recordings: Dict[str, Recording], supervisions: List[SupervisionSegment], problems: Problems,
           output_dir: Path, name: str, split: str, sampling_rate: Optional[int], source: str,
           extra: Optional[dict] = None) -> dict:
    """Resample, write the three manifests (cuts last) and the report (with ``extra``); UserError if
    nothing is usable."""
    where = f"{name}/{split}"
    problems.warn(where)
    if not supervisions:
        counts = problems.counts()
        raise UserError(f"{source}: no usable utterances" + (f" ({counts})" if counts else ""))
    used = {s.recording_id for s in supervisions}
    recs = [r for rid, r in recordings.items() if rid in used]
    rate = target_rate(recs, sampling_rate, where)
    moved = Counter(r.sampling_rate for r in recs if r.sampling_rate != rate)
    if moved:
        log.info(f"{where}: resampling {sum(moved.values())} of {len(recs)} recordings to {rate} Hz "
                 f"(from {', '.join(f'{n} at {r} Hz' for r, n in sorted(moved.items()))}), in the manifest")
    recs = [r if r.sampling_rate == rate else r.resample(rate) for r in recs]
    recording_set = RecordingSet.from_recordings(recs)
    supervision_set = SupervisionSet.from_segments(supervisions)
    cuts = CutSet.from_manifests(recordings=recording_set, supervisions=supervision_set).trim_to_supervisions(
        keep_overlapping=False)
    out = paths(output_dir, name, split)
    for kind, manifest in (("recordings", recording_set), ("supervisions", supervision_set), ("cuts", cuts)):
        with atomic_path(out[kind]) as tmp:
            manifest.to_file(tmp)
    report = {
        "source": source,
        "utterances": len(supervisions),
        "speakers": len({s.speaker for s in supervisions}),
        "hours": round(sum(s.duration for s in supervisions) / 3600, 4),
        "sampling_rate": rate,
        "resampled": sum(moved.values()),
        "resampled_from": {str(r): n for r, n in sorted(moved.items())},
        "transcribed": any(s.text for s in supervisions),
        "skipped": problems.counts(),
        "skipped_items": problems.items(),
        **(extra or {}),
    }
    report_path = output_dir / f"{name}_prepare.json"
    with exclusive_lock(output_dir / f".{name}_prepare.lock"):
        reports = read_json(report_path) if report_path.is_file() else {}
        reports[split] = report
        write_json(report_path, reports)
    skipped = sum(report["skipped"].values())
    log.info(f"{where}: {report['utterances']} utterances, {report['speakers']} speakers, {report['hours']:.2f} h "
             f"at {rate} Hz; skipped {skipped} -> {out['cuts']}")
    return report


def _done(output_dir: Path, name: str, split: str) -> Optional[dict]:
    report_path = output_dir / f"{name}_prepare.json"
    if paths(output_dir, name, split)["cuts"].is_file() and report_path.is_file():
        return read_json(report_path).get(split)
    return None


# ---------------------------------------------------------------- the two imports


def held_out_speakers(supervisions: List[SupervisionSegment], num: int, seed: int = 0) -> List[str]:
    """``num`` speakers of ``supervisions`` chosen for a dev set, the same ones on every run (a
    seeded shuffle of the sorted speakers); UserError unless at least one speaker is left over."""
    speakers = sorted({s.speaker for s in supervisions})
    if not 0 < num < len(speakers):
        raise UserError(f"--dev-speakers {num}: the set has {len(speakers)} speakers; dev takes 1 to "
                        f"{len(speakers) - 1} of them (the rest is the test set)")
    random.Random(seed).shuffle(speakers)
    return sorted(speakers[:num])


def import_kaldi_dir(data_dir: Pathlike, output_dir: Pathlike, name: Optional[str] = None, split: str = "test",
                     sampling_rate: Optional[int] = None, audio_root: Optional[Pathlike] = None,
                     force: bool = False, dev_speakers: int = 0) -> dict:
    """Import a Kaldi data dir (see the module docstring); returns the split's report.

    ``dev_speakers`` > 0 holds that many whole speakers out as split ``dev`` (written first; for
    tuning the LM weight without touching the test set, :func:`held_out_speakers`) and writes the
    others as ``split``. The data dir's bad entries are counted once, in ``split``'s report."""
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    name = name or data_dir.resolve().name
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such directory (a Kaldi data dir)")
    if not (data_dir / "wav.scp").is_file():
        raise UserError(f"{data_dir}: missing wav.scp (a Kaldi data dir needs it)")
    if split == "dev" and dev_speakers:
        raise UserError("--dev-speakers writes the held-out speakers as split dev: give another --split")
    if not force and (done := _done(output_dir, name, split)) is not None and (
            not dev_speakers or _done(output_dir, name, "dev") is not None):
        log.info(f"{name}/{split}: manifests exist in {output_dir}; skipping (use --force to redo)")
        return done
    problems = Problems()
    wav = read_table(data_dir / "wav.scp", problems)
    roots = [Path(audio_root)] if audio_root else [Path.cwd(), data_dir.resolve().parent]
    recordings = kaldi_recordings(wav, roots, problems)
    candidates, transcribed = kaldi_supervisions(data_dir, wav, recordings, problems)
    supervisions = check_supervisions(candidates, recordings, wav, problems, require_text=transcribed)
    if not dev_speakers:
        return finish(recordings, supervisions, problems, output_dir, name, split, sampling_rate, str(data_dir))
    dev = set(held_out_speakers(supervisions, dev_speakers))
    carved = {"dev_speakers": sorted(dev)}
    log.info(f"{name}: speakers {', '.join(sorted(dev))} held out as dev; the other "
             f"{len({s.speaker for s in supervisions} - dev)} as {split}")
    # The split last: its cuts manifest marks the import done.
    finish(recordings, [s for s in supervisions if s.speaker in dev], Problems(), output_dir, name, "dev",
           sampling_rate, str(data_dir), extra=carved)
    return finish(recordings, [s for s in supervisions if s.speaker not in dev], problems, output_dir, name, split,
                  sampling_rate, str(data_dir), extra=carved)


def import_lhotse(manifest: Pathlike, output_dir: Pathlike, name: Optional[str] = None, split: Optional[str] = None,
                  sampling_rate: Optional[int] = None, supervisions: Optional[Pathlike] = None,
                  force: bool = False) -> dict:
    """Import a lhotse cuts manifest, or a recordings manifest with its supervisions. ``name`` and
    ``split`` default to those in a ``{name}_cuts_{split}.jsonl.gz`` file name, else the file's
    stem and ``test``."""
    manifest, output_dir = Path(manifest), Path(output_dir)
    stem = manifest.name.split(".")[0]
    for kind in ("_cuts_", "_recordings_"):
        if kind in stem:
            default_name, default_split = stem.split(kind, 1)
            break
    else:
        default_name, default_split = stem, "test"
    name, split = name or default_name, split or default_split
    if not force and (done := _done(output_dir, name, split)) is not None:
        log.info(f"{name}/{split}: manifests exist in {output_dir}; skipping (use --force to redo)")
        return done
    loaded = _load(manifest)
    if isinstance(loaded, CutSet):
        if supervisions:
            raise UserError(f"{manifest} is a cuts manifest: --supervisions is only for a recordings manifest")
        recording_set, supervision_set, _ = loaded.decompose()
        if recording_set is None:
            raise UserError(f"{manifest}: cuts without recordings (audio is needed)")
    elif isinstance(loaded, RecordingSet):
        if not supervisions:
            raise UserError(f"{manifest} is a recordings manifest: give its supervisions with --supervisions")
        recording_set, supervision_set = loaded, _load(Path(supervisions))
        if not isinstance(supervision_set, SupervisionSet):
            raise UserError(f"{supervisions}: a {type(supervision_set).__name__} manifest, not supervisions")
    else:
        raise UserError(f"{manifest}: a {type(loaded).__name__} manifest; give cuts, or recordings with --supervisions")
    problems = Problems()
    recordings = {}
    for rec in recording_set:
        missing = [s.source for s in rec.sources if s.type == "file" and not Path(s.source).is_file()]
        if missing:
            problems.add("missing audio files", rec.id, missing[0])
        elif rec.num_samples <= 0 or rec.duration <= 0:
            problems.add("empty recordings", rec.id)
        else:
            recordings[rec.id] = rec
    sups = list(supervision_set or [])
    transcribed = any(s.text is not None for s in sups)
    if not transcribed:
        log.warning(f"{manifest}: no transcripts: the set is for decoding only (no WER)")
    checked = check_supervisions(sups, recordings, [r.id for r in recording_set], problems, require_text=transcribed)
    return finish(recordings, checked, problems, output_dir, name, split, sampling_rate, str(manifest))


def _load(path: Path):
    if not path.is_file():
        raise UserError(f"{path} not found")
    try:
        return load_manifest(path)
    except Exception as e:  # gzip, JSON, lhotse's schema
        raise UserError(f"{path}: not a lhotse manifest ({type(e).__name__}: {e})") from e
