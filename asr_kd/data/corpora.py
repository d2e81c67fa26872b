"""Corpus preparation: a local corpus directory in, lhotse manifests out.

Every corpus is read from a local directory (the official layout; see :mod:`asr_kd.data.download`
for fetching it). For each split we write, atomically, under ``output_dir``::

    {corpus}_recordings_{split}.jsonl.gz   {corpus}_supervisions_{split}.jsonl.gz   {corpus}_cuts_{split}.jsonl.gz

and ``{corpus}_prepare.json`` with the counts (utterances, speakers, hours, skipped items and why).

Bad input never disappears silently: an unreadable or empty audio file, an empty transcript or a
missing file is skipped with a warning naming it, and counted in the report; a recording at the
wrong sample rate is resampled to the corpus rate with a warning.

| corpus | layout | splits |
|---|---|---|
| yesno | ``waves_yesno/*.wav`` (8 kHz), label in the file name | train / test: alternate files, as lhotse and icefall |
| fsdd | ``recordings/{digit}_{speaker}_{take}.{wav,flac}`` (8 kHz) | train / test: one speaker held out |
| speechocean762 | Kaldi data dirs ``train/``, ``test/`` (``text``, ``wav.scp``, ``utt2spk``, ``spk2gender``) (16 kHz) | its own, speakers disjoint |
| librispeech | OpenSLR layout, through ``lhotse.recipes.prepare_librispeech`` (16 kHz) | the parts found |

A user's own data (``asr-kd prepare kaldi`` for any Kaldi data dir, ``asr-kd prepare lhotse`` for
existing manifests) goes through :mod:`asr_kd.data.import_data` into the same layout.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.recipes import prepare_librispeech as lhotse_prepare

from asr_kd.data import import_data
from asr_kd.data.text import DIGIT_WORDS, normalize_text
from asr_kd.utils import Pathlike, atomic_path, outputs_exist, read_json, write_json

log = logging.getLogger(__name__)

SAMPLING_RATE = {"yesno": 8000, "fsdd": 8000, "speechocean762": 16000, "librispeech": 16000}
SPLITS = {"yesno": ("train", "dev", "test"), "fsdd": ("train", "dev", "test"),
          "speechocean762": ("train", "dev", "test")}
FSDD_TEST_SPEAKER = "theo"
DEV_FRACTION = 0.05


@dataclass
class Utterance:
    """One entry of a corpus listing, before its audio has been checked."""

    id: str
    audio: Path
    text: str
    speaker: str
    gender: Optional[str] = None


@dataclass
class SplitReport:
    """What went into a split's manifests, and what was left out and why."""

    utterances: int = 0
    speakers: int = 0
    hours: float = 0.0
    resampled: int = 0
    skipped: Dict[str, int] = field(default_factory=dict)
    skipped_items: List[Tuple[str, str]] = field(default_factory=list)  # (file or id, reason)

    def skip(self, item: str, reason: str, detail: str = "") -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.skipped_items.append((item, f"{reason}{': ' + detail if detail else ''}"))
        log.warning(f"skipping {item}: {reason}{': ' + detail if detail else ''}")

    def as_dict(self) -> dict:
        return {
            "utterances": self.utterances,
            "speakers": self.speakers,
            "hours": round(self.hours, 4),
            "resampled": self.resampled,
            "skipped": dict(self.skipped),
            "skipped_items": [list(x) for x in self.skipped_items],
        }


def build_manifests(
    utterances: Iterable[Utterance], sampling_rate: int, language: str = "English"
) -> Tuple[RecordingSet, SupervisionSet, SplitReport]:
    """Check each utterance's transcript and audio header; return manifests and a report."""
    report = SplitReport()
    recordings, supervisions = [], []
    seen = set()
    for utt in utterances:
        text = normalize_text(utt.text)
        if utt.id in seen:
            report.skip(str(utt.audio), "duplicate utterance id", utt.id)
            continue
        if not text:
            report.skip(str(utt.audio), "empty transcript")
            continue
        if not utt.audio.is_file():
            report.skip(str(utt.audio), "missing audio file")
            continue
        try:
            rec = Recording.from_file(utt.audio, recording_id=utt.id)
        except Exception as e:  # soundfile / audioread raise many types for corrupt files
            report.skip(str(utt.audio), "unreadable audio", f"{type(e).__name__}: {e}")
            continue
        if rec.num_samples <= 0 or rec.duration <= 0:
            report.skip(str(utt.audio), "empty audio")
            continue
        if rec.sampling_rate != sampling_rate:
            log.warning(
                f"{utt.audio}: sample rate {rec.sampling_rate} Hz, expected {sampling_rate} Hz: resampling"
            )
            rec = rec.resample(sampling_rate)
            report.resampled += 1
        seen.add(utt.id)
        recordings.append(rec)
        supervisions.append(
            SupervisionSegment(
                id=utt.id,
                recording_id=utt.id,
                start=0.0,
                duration=rec.duration,
                channel=0,
                text=text,
                speaker=utt.speaker,
                gender=utt.gender,
                language=language,
            )
        )
    report.utterances = len(recordings)
    report.speakers = len({s.speaker for s in supervisions})
    report.hours = sum(r.duration for r in recordings) / 3600
    return RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions), report


# ---------------------------------------------------------------- corpus listings


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: no such directory: {path}")
    return path


def list_yesno(corpus_dir: Pathlike) -> Dict[str, List[Utterance]]:
    """``corpus_dir`` is the ``waves_yesno`` directory (or its parent)."""
    corpus_dir = Path(corpus_dir)
    if (corpus_dir / "waves_yesno").is_dir():
        corpus_dir = corpus_dir / "waves_yesno"
    _require_dir(corpus_dir, "yesno")
    words = {"0": "NO", "1": "YES"}
    utts = []
    for path in sorted(corpus_dir.glob("*.wav")):
        labels = path.stem.split("_")
        if not labels or any(x not in words for x in labels):
            log.warning(f"{path}: file name is not a yes/no label sequence; skipped")
            continue
        utts.append(Utterance(path.stem, path, " ".join(words[x] for x in labels), "yesno", "m"))
    if not utts:
        raise FileNotFoundError(f"yesno: no labelled .wav files in {corpus_dir}")
    # Alternate files, as lhotse's and icefall's yesno recipes do.
    return {"train": utts[::2], "test": utts[1::2]}


def list_fsdd(corpus_dir: Pathlike, test_speaker: str = FSDD_TEST_SPEAKER) -> Dict[str, List[Utterance]]:
    """``corpus_dir`` holds ``recordings/`` (or is it). One speaker is held out for test."""
    corpus_dir = Path(corpus_dir)
    if (corpus_dir / "recordings").is_dir():
        corpus_dir = corpus_dir / "recordings"
    _require_dir(corpus_dir, "fsdd")
    splits: Dict[str, List[Utterance]] = {"train": [], "test": []}
    speakers = set()
    for path in sorted(corpus_dir.iterdir()):
        if path.suffix.lower() not in (".wav", ".flac", ".ogg", ".opus"):
            continue
        parts = path.stem.split("_")
        if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) > 9:
            log.warning(f"{path}: not a {{digit}}_{{speaker}}_{{take}} file name; skipped")
            continue
        digit, speaker, _ = parts
        speakers.add(speaker)
        split = "test" if speaker == test_speaker else "train"
        splits[split].append(Utterance(path.stem, path, DIGIT_WORDS[int(digit)], speaker))
    if test_speaker not in speakers:
        raise ValueError(f"fsdd: test speaker {test_speaker!r} not among {sorted(speakers)}")
    return splits


def _read_kaldi_table(path: Path) -> Dict[str, str]:
    table = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.strip().split(None, 1)
            if parts:
                table[parts[0]] = parts[1] if len(parts) > 1 else ""
    return table


def list_kaldi_data_dir(data_dir: Path, audio_root: Path) -> List[Utterance]:
    """A Kaldi data dir (``text``, ``wav.scp``, ``utt2spk``, optional ``spk2gender``).

    ``wav.scp`` entries must be file paths (relative ones are taken from ``audio_root``);
    command pipes (``... |``) are not supported.
    """
    for name in ("text", "wav.scp", "utt2spk"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"Kaldi data dir {data_dir}: missing {name}")
    text = _read_kaldi_table(data_dir / "text")
    wav = _read_kaldi_table(data_dir / "wav.scp")
    utt2spk = _read_kaldi_table(data_dir / "utt2spk")
    spk2gender = _read_kaldi_table(data_dir / "spk2gender") if (data_dir / "spk2gender").is_file() else {}
    utts = []
    for utt_id, path in wav.items():
        if path.endswith("|"):
            raise ValueError(f"{data_dir}/wav.scp: piped entries are not supported ({utt_id})")
        if utt_id not in text:
            log.warning(f"{data_dir}/text: no transcript for {utt_id}; counted as empty")
        p = Path(path)
        spk = utt2spk.get(utt_id, utt_id)
        utts.append(Utterance(utt_id, p if p.is_absolute() else audio_root / p, text.get(utt_id, ""),
                              spk, spk2gender.get(spk)))
    return utts


def list_speechocean762(corpus_dir: Pathlike) -> Dict[str, List[Utterance]]:
    corpus_dir = _require_dir(Path(corpus_dir), "speechocean762")
    return {split: list_kaldi_data_dir(corpus_dir / split, corpus_dir) for split in ("train", "test")}


LISTINGS = {"yesno": list_yesno, "fsdd": list_fsdd, "speechocean762": list_speechocean762}


def carve_dev(train: List[Utterance], fraction: float = DEV_FRACTION, seed: int = 0) -> Tuple[List[Utterance], List[Utterance]]:
    """Split a dev set off the training utterances, for tuning (LM weight, early stopping) without
    touching test: whole speakers when there are at least 10 of them, otherwise every k-th
    utterance. Deterministic for a given ``seed``."""
    if fraction <= 0:
        return train, []
    speakers = sorted({u.speaker for u in train})
    if len(speakers) >= 10:
        random.Random(seed).shuffle(speakers)
        dev_spk = set(speakers[: max(1, round(fraction * len(speakers)))])
        return [u for u in train if u.speaker not in dev_spk], [u for u in train if u.speaker in dev_spk]
    step = min(max(2, round(1 / fraction)), len(train))
    return [u for i, u in enumerate(train) if i % step != step - 1], train[step - 1 :: step]


# ---------------------------------------------------------------- writing


def manifest_paths(output_dir: Pathlike, corpus: str, split: str) -> Dict[str, Path]:
    output_dir = Path(output_dir)
    return {kind: output_dir / f"{corpus}_{kind}_{split}.jsonl.gz" for kind in ("recordings", "supervisions", "cuts")}


def write_manifests(recordings: RecordingSet, supervisions: SupervisionSet, paths: Dict[str, Path]) -> CutSet:
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    for kind, manifest in (("recordings", recordings), ("supervisions", supervisions), ("cuts", cuts)):
        with atomic_path(paths[kind]) as tmp:
            manifest.to_file(tmp)
    return cuts


def prepare_corpus(
    corpus: str,
    corpus_dir: Pathlike,
    output_dir: Pathlike,
    force: bool = False,
    dev_fraction: float = DEV_FRACTION,
    **listing_kwargs,
) -> Dict[str, dict]:
    """Prepare one corpus; returns (and writes) the per-split report. Skips when done unless ``force``.

    The corpus's train split is divided into ``train`` and ``dev`` (see :func:`carve_dev`).
    """
    output_dir = Path(output_dir)
    report_path = output_dir / f"{corpus}_prepare.json"
    if corpus == "librispeech":
        return prepare_librispeech(corpus_dir, output_dir, force=force, dev_fraction=dev_fraction, **listing_kwargs)
    if corpus not in LISTINGS:
        raise ValueError(f"unknown corpus {corpus!r}; known: {sorted(LISTINGS) + ['librispeech']}")
    if not force and report_path.exists():
        done = [manifest_paths(output_dir, corpus, s)["cuts"] for s in read_json(report_path)]
        if outputs_exist(*done):
            log.info(f"{corpus}: manifests exist in {output_dir}; skipping (use --force to redo)")
            return read_json(report_path)
    listing = LISTINGS[corpus](corpus_dir, **listing_kwargs)
    listing["train"], listing["dev"] = carve_dev(listing["train"], dev_fraction)
    reports = {}
    for split in SPLITS[corpus]:
        if split == "dev" and not listing["dev"]:
            continue  # --dev-fraction 0
        recordings, supervisions, report = build_manifests(listing[split], SAMPLING_RATE[corpus])
        if report.utterances == 0:
            raise RuntimeError(f"{corpus}/{split}: no usable utterances in {corpus_dir}")
        write_manifests(recordings, supervisions, manifest_paths(output_dir, corpus, split))
        reports[split] = report.as_dict()
    write_json(report_path, reports)
    log_report(corpus, reports)
    return reports


def parse_librispeech_parts(parts: Sequence[str]) -> Dict[str, List[str]]:
    """``["train=train-clean-100,train-clean-360", "test=test-clean"]`` -> ``{"train": [...], "test": [...]}``.

    A part given without ``SPLIT=`` is written under its own name (``dev-clean`` -> ``dev-clean``)."""
    splits: Dict[str, List[str]] = {}
    for item in parts:
        split, _, names = item.rpartition("=")
        split = split or names
        names = [n for n in names.split(",") if n]
        if not split or not names or split in splits:
            raise ValueError(f"librispeech: bad --parts entry {item!r}: give PART or SPLIT=PART[,PART...], "
                             "each split once")
        splits[split] = names
    return splits


def prepare_librispeech(
    corpus_dir: Pathlike,
    output_dir: Pathlike,
    force: bool = False,
    parts: Sequence[str] = ("auto",),
    num_jobs: int = 2,
    dev_fraction: float = 0.0,
) -> Dict[str, dict]:
    """LibriSpeech or mini-LibriSpeech through lhotse's own recipe, then our text normalization.

    ``parts`` names the corpus parts (``auto``: those found), each written under its own name, or
    maps them to the recipe's splits: ``train=train-clean-100,train-clean-360 dev=dev-clean
    test=test-clean`` writes ``librispeech_cuts_{train,dev,test}`` (several parts of one split are
    concatenated). With a ``train`` split and no ``dev`` one, dev is carved from train's speakers
    (``dev_fraction``, see :func:`carve_dev`). The report records the parts of each split.
    """
    output_dir = Path(output_dir)
    report_path = output_dir / "librispeech_prepare.json"
    auto = len(parts) == 1 and parts[0] in ("auto", "mini_librispeech", "all")
    splits = {} if auto else parse_librispeech_parts(parts)
    carve = "train" in splits and "dev" not in splits and dev_fraction > 0
    wanted = list(splits) + (["dev"] if carve else [])
    if not force and report_path.exists():
        done = read_json(report_path)
        if auto or all(s in done for s in wanted) and outputs_exist(
                *[manifest_paths(output_dir, "librispeech", s)["cuts"] for s in wanted]):
            log.info(f"librispeech: manifests exist in {output_dir}; skipping (use --force to redo)")
            return done
    _require_dir(Path(corpus_dir), "librispeech")
    names = parts[0] if auto else sorted({n for ns in splits.values() for n in ns})
    for split, ns in splits.items():  # lhotse asserts on a part with no utterances: say which one first
        for n in ns:
            if not any((Path(corpus_dir) / n).rglob("*.trans.txt")):
                raise RuntimeError(f"librispeech: part {n} (for split {split}) has no transcripts "
                                   f"(*.trans.txt) in {Path(corpus_dir) / n}")
    manifests = lhotse_prepare(corpus_dir, dataset_parts=names, output_dir=None, num_jobs=num_jobs)
    if auto:
        splits = {part: [part] for part in manifests}
    for split, ns in splits.items():
        for n in ns:
            if n not in manifests or len(manifests[n]["supervisions"]) == 0:
                raise RuntimeError(f"librispeech: no utterances in part {n} ({Path(corpus_dir) / n}), "
                                   f"wanted for split {split}")
    rate = SAMPLING_RATE["librispeech"]
    built = {}
    for split, ns in splits.items():
        report = SplitReport()
        recordings = []
        for r in (r for n in ns for r in manifests[n]["recordings"]):
            if r.sampling_rate != rate:
                log.warning(f"{r.sources[0].source}: sample rate {r.sampling_rate} Hz, expected {rate} Hz: resampling")
                r = r.resample(rate)
                report.resampled += 1
            recordings.append(r)
        supervisions = []
        for s in (s for n in ns for s in manifests[n]["supervisions"]):
            s = s.transform_text(normalize_text)
            if s.text:
                supervisions.append(s)
            else:
                report.skip(s.recording_id, "empty transcript")
        built[split] = (recordings, sorted(supervisions, key=lambda s: s.id), report, ns)
    if carve:
        recordings, supervisions, report, ns = built["train"]
        train, dev = carve_dev(supervisions, dev_fraction)
        dev_ids = {s.recording_id for s in dev}
        built["train"] = ([r for r in recordings if r.id not in dev_ids], train, report, ns)
        built["dev"] = ([r for r in recordings if r.id in dev_ids], dev, SplitReport(), ns)
    reports = {}
    for split in wanted or splits:
        recordings, supervisions, report, ns = built[split]
        used = {s.recording_id for s in supervisions}
        recordings = RecordingSet.from_recordings(r for r in recordings if r.id in used)
        supervisions = SupervisionSet.from_segments(supervisions)
        report.utterances = len(supervisions)
        report.speakers = len({s.speaker for s in supervisions})
        report.hours = sum(r.duration for r in recordings) / 3600
        if report.utterances == 0:
            raise RuntimeError(f"librispeech/{split}: no usable utterances in {corpus_dir} (parts {', '.join(ns)})")
        write_manifests(recordings, supervisions, manifest_paths(output_dir, "librispeech", split))
        reports[split] = {**report.as_dict(), "parts": list(ns)}
        if carve and split in ("train", "dev"):
            reports[split]["carved"] = f"dev: {dev_fraction:g} of {', '.join(ns)}"
    write_json(report_path, reports)
    log_report("librispeech", reports)
    return reports


def log_report(corpus: str, reports: Dict[str, dict]) -> None:
    for split, r in reports.items():
        skipped = sum(r["skipped"].values())
        log.info(
            f"{corpus}/{split}: {r['utterances']} utterances, {r['speakers']} speakers, "
            f"{r['hours']:.2f} h; skipped {skipped} {r['skipped'] if skipped else ''}"
            f"{'; resampled ' + str(r['resampled']) if r['resampled'] else ''}"
        )


# ---------------------------------------------------------------- CLI: asr-kd prepare


IMPORTS = ("kaldi", "lhotse")  # a user's own data: asr_kd.data.import_data


def add_arguments(parser) -> None:
    parser.add_argument("corpus", choices=sorted(LISTINGS) + ["librispeech", *IMPORTS],
                        help="a known corpus, or kaldi (any Kaldi data dir) / lhotse (existing manifests)")
    parser.add_argument("corpus_dir", type=Path,
                        help="the corpus in its official layout; kaldi: the data dir; lhotse: a cuts or recordings manifest")
    parser.add_argument("output_dir", type=Path, help="where the manifests go (e.g. data/manifests)")
    parser.add_argument("--test-speaker", default=FSDD_TEST_SPEAKER, help="fsdd: the held-out speaker")
    parser.add_argument("--parts", nargs="+", default=["auto"],
                        help="librispeech: parts to prepare (auto: those found), each under its own name, or mapped "
                        "to splits as SPLIT=PART[,PART...] (train=train-clean-100 dev=dev-clean test=test-clean); "
                        "with train= and no dev=, dev is carved from train (--dev-fraction)")
    parser.add_argument("--dev-fraction", type=float, default=DEV_FRACTION,
                        help="part of train held out as dev (whole speakers when there are >= 10)")
    parser.add_argument("--name", help="kaldi/lhotse: the name manifests are written under "
                        "(default: the data dir's name; lhotse: from a {name}_cuts_{split} file name)")
    parser.add_argument("--split", help="kaldi/lhotse: the split written (default: test)")
    parser.add_argument("--sampling-rate", type=int,
                        help="kaldi/lhotse: resample recordings at other rates to this one, e.g. the model's "
                        "(default: the set's rate; its most common one if mixed)")
    parser.add_argument("--dev-speakers", type=int, default=0,
                        help="kaldi: hold this many whole speakers out as split dev (e.g. to tune the LM weight "
                        "on); the others are --split")
    parser.add_argument("--audio-root", type=Path,
                        help="kaldi: where relative wav.scp paths start (default: the current directory, "
                        "then the data dir's parent)")
    parser.add_argument("--supervisions", type=Path, help="lhotse: the supervisions of a recordings manifest")
    parser.add_argument("--force", action="store_true", help="redo even if the manifests exist")


def run(args) -> int:
    if args.corpus in IMPORTS:
        common = dict(name=args.name, split=args.split, sampling_rate=args.sampling_rate, force=args.force)
        if args.corpus == "kaldi":
            import_data.import_kaldi_dir(args.corpus_dir, args.output_dir, audio_root=args.audio_root,
                                         dev_speakers=args.dev_speakers, **{**common, "split": args.split or "test"})
        else:
            import_data.import_lhotse(args.corpus_dir, args.output_dir, supervisions=args.supervisions, **common)
        return 0
    kwargs = {}
    if args.corpus == "fsdd":
        kwargs["test_speaker"] = args.test_speaker
    if args.corpus == "librispeech":
        kwargs["parts"] = args.parts
    kwargs["dev_fraction"] = args.dev_fraction
    prepare_corpus(args.corpus, args.corpus_dir, args.output_dir, force=args.force, **kwargs)
    return 0
