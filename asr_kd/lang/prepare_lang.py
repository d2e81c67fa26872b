"""The lang directory, in Kaldi's layout (what ``utils/prepare_lang.sh`` makes)::

    data/lang/
      phones.txt  words.txt            symbol tables (<eps> = 0; disambiguation symbols last)
      lexicon.txt lexicon_disambig.txt pronunciations, the second with #1, #2... appended
      phones/{silence,nonsilence,optional_silence,disambig}.txt
      L.fst                            lexicon FST with optional silence between words
      L_disambig.fst                   the same with disambiguation symbols and #0:#0 self-loops
      lang_stats.json                  vocabulary size, OOVs per split and where pronunciations came from

The vocabulary is the primary lexicon (e.g. speechocean762's own) plus every word of the
*training* transcripts (pronunciations from CMUdict or the graphemic fallback when missing).
Words that appear only in other splits (test) are not added: they are counted as OOVs, exactly
what a decoder with this vocabulary will miss.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import kaldifst

from asr_kd.data.text import normalize_text
from asr_kd.lang.lexicon import (
    OOV_PHONE,
    OOV_WORD,
    SILENCE_PHONE,
    Lexicon,
    Pronunciation,
    build_lexicon,
    read_lexicon,
    write_lexicon,
)
from asr_kd.lang.phone_set import phones_from_table
from asr_kd.utils import Pathlike, atomic_path, iter_cuts, outputs_exist, read_json, write_json, write_text

log = logging.getLogger(__name__)

EPS = "<eps>"
SILENCE_PHONES = (SILENCE_PHONE, OOV_PHONE)


def add_disambig_symbols(lexicon: Lexicon) -> Tuple[List[Tuple[str, Pronunciation]], int]:
    """Kaldi's ``add_lex_disambig.pl``: append ``#k`` to pronunciations that are homophones of
    another word's or a proper prefix of another pronunciation, so that L can be determinized.

    Returns the ``(word, pronunciation)`` list and the highest ``k`` used (0 if none).
    """
    entries = [(w, p) for w, prons in lexicon.items() for p in prons]
    count = Counter(p for _, p in entries)
    prefixes = {p[:i] for _, p in entries for i in range(1, len(p))}
    last: Dict[Pronunciation, int] = {}
    out, max_k = [], 0
    for w, p in entries:
        if count[p] > 1 or p in prefixes:
            k = last.get(p, 0) + 1
            last[p] = k
            max_k = max(max_k, k)
            p = p + (f"#{k}",)
        out.append((w, p))
    return out, max_k


def symbol_table_text(symbols: Sequence[str]) -> str:
    return "".join(f"{s} {i}\n" for i, s in enumerate(symbols))


def read_symbol_table(path: Pathlike) -> Dict[str, int]:
    table = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) == 2:
                table[fields[0]] = int(fields[1])
    return table


def lexicon_fst_text(
    entries: Sequence[Tuple[str, Pronunciation]],
    phones: Dict[str, int],
    words: Dict[str, int],
    sil_prob: float = 0.5,
    disambig_loop: bool = False,
) -> str:
    """L in OpenFst text form (Kaldi's ``make_lexicon_fst.py --sil-prob``).

    State 0 starts, state 1 is the word loop (final), state 2 is "after silence". Each word may
    be followed by optional silence with probability ``sil_prob``; so may the utterance start.
    ``disambig_loop`` adds the ``#0:#0`` self-loop on the word loop (for L_disambig with G).
    """
    start, loop, sil = 0, 1, 2
    no_sil_cost = -math.log(1.0 - sil_prob)
    sil_cost = -math.log(sil_prob)
    arcs = [
        f"{start} {loop} 0 0 {no_sil_cost:.6f}",
        f"{start} {sil} 0 0 {sil_cost:.6f}",
        f"{sil} {loop} {phones[SILENCE_PHONE]} 0 0",
    ]
    next_state = 3
    for word, pron in entries:
        if not pron:
            raise ValueError(f"word {word!r} has an empty pronunciation")
        src = loop
        for i, phone in enumerate(pron[:-1]):
            olabel = words[word] if i == 0 else 0
            arcs.append(f"{src} {next_state} {phones[phone]} {olabel} 0")
            src, next_state = next_state, next_state + 1
        olabel = words[word] if len(pron) == 1 else 0
        last = phones[pron[-1]]
        arcs.append(f"{src} {loop} {last} {olabel} {no_sil_cost:.6f}")
        arcs.append(f"{src} {sil} {last} {olabel} {sil_cost:.6f}")
    if disambig_loop:
        arcs.append(f"{loop} {loop} {phones['#0']} {words['#0']} 0")
    arcs.append(f"{loop} 0")
    return "\n".join(arcs) + "\n"


def compile_fst(text: str, path: Pathlike, sort_type: str = "olabel") -> None:
    fst = kaldifst.compile(text, acceptor=False)
    kaldifst.arcsort(fst, sort_type=sort_type)
    with atomic_path(path) as tmp:
        fst.write(str(tmp))


@dataclass
class Lang:
    """A lang directory loaded into memory."""

    dir: Path
    phones: Dict[str, int]
    words: Dict[str, int]
    lexicon: Lexicon
    silence_phones: List[str]
    nonsilence_phones: List[str]
    disambig_phones: List[str]
    optional_silence: str

    @classmethod
    def load(cls, lang_dir: Pathlike) -> "Lang":
        d = Path(lang_dir)
        if not (d / "phones.txt").is_file():
            raise FileNotFoundError(f"{d}: not a lang directory (no phones.txt); run the lang stage first")

        phones = read_symbol_table(d / "phones.txt")

        def lines(name: str, default=None) -> List[str]:
            path = d / "phones" / name
            if not path.is_file():
                if default is None:
                    raise FileNotFoundError(f"{path} is missing (is {d} a Kaldi-layout lang directory?)")
                return default
            return path.read_text().split()

        silence = lines("silence.txt")
        # Directories made by other tools may lack these two lists: derive them from phones.txt.
        disambig = lines("disambig.txt", [p for p in phones if p.startswith("#")])
        nonsilence = lines("nonsilence.txt", [p for p in phones if p != EPS and p not in silence and p not in disambig])
        return cls(
            dir=d,
            phones=phones,
            words=read_symbol_table(d / "words.txt"),
            lexicon=read_lexicon(d / "lexicon.txt", keep_stress=True),
            silence_phones=silence,
            nonsilence_phones=nonsilence,
            disambig_phones=disambig,
            optional_silence=lines("optional_silence.txt", silence[:1])[0],
        )


def transcript_words(cuts_paths: Sequence[Pathlike]) -> Counter:
    counts: Counter = Counter()
    for path in cuts_paths:
        for cut in iter_cuts(path, "run the prepare stage first"):
            for sup in cut.supervisions:
                counts.update(normalize_text(sup.text or "").split())
    return counts


def prepare_lang(
    lang_dir: Pathlike,
    vocab_cuts: Sequence[Pathlike],
    report_cuts: Optional[Dict[str, Pathlike]] = None,
    lexicon_path: Optional[Pathlike] = None,
    use_cmudict: bool = True,
    graphemic: bool = False,
    keep_stress: bool = False,
    sil_prob: float = 0.5,
    force: bool = False,
    phone_symbol_table: Optional[Pathlike] = None,
) -> dict:
    """Build ``lang_dir`` from the transcripts of ``vocab_cuts`` and an optional corpus lexicon.

    With ``phone_symbol_table`` (a model's ``phones.txt``) the lang keeps exactly its phone ids
    (:mod:`asr_kd.lang.phone_set`); a word pronounced with another phone is an error.

    Skipped when ``L.fst``, ``L_disambig.fst`` and ``lang_stats.json`` exist (unless ``force``);
    the last two are written last and removed before a redo rewrites anything, so that they
    mark a complete lang directory even after a killed ``--force`` run.
    ``report_cuts`` maps a split name to a cuts manifest whose OOV rate is reported (not added).
    """
    lang_dir = Path(lang_dir)
    stats_path = lang_dir / "lang_stats.json"
    if not force and outputs_exist(lang_dir / "L.fst", lang_dir / "L_disambig.fst", stats_path):
        log.info(f"{lang_dir} exists; skipping (use --force to redo)")
        return read_json(stats_path)
    for p in list(vocab_cuts) + list((report_cuts or {}).values()):
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p} not found: run the prepare stage first")
    train_counts = transcript_words(vocab_cuts)
    primary = read_lexicon(lexicon_path, keep_stress) if lexicon_path else None
    primary_words = set(primary or ())
    lexicon, sources = build_lexicon(
        sorted(train_counts), primary, use_cmudict=use_cmudict, graphemic=graphemic, keep_stress=keep_stress
    )
    lexicon.pop(OOV_WORD, None)
    lexicon[OOV_WORD] = [(OOV_PHONE,)]

    entries, max_k = add_disambig_symbols(lexicon)
    nonsil = sorted({p for prons in lexicon.values() for pron in prons for p in pron} - set(SILENCE_PHONES))
    disambig = [f"#{k}" for k in range(max_k + 1)]
    phone_list = [EPS, *SILENCE_PHONES, *nonsil, *disambig]
    word_list = [EPS, OOV_WORD, *sorted(w for w in lexicon if w != OOV_WORD), "#0", "<s>", "</s>"]
    phones = {p: i for i, p in enumerate(phone_list)}
    words = {w: i for i, w in enumerate(word_list)}
    if phone_symbol_table is not None:  # a trained model's phone ids (Kaldi's --phone-symbol-table)
        phone_list, nonsil, disambig = phones_from_table(phone_symbol_table, lexicon, SILENCE_PHONES, max_k)
        phones = {p: i for i, p in enumerate(phone_list)}

    # Redoing: the files that mark the stage complete go first, so that a run killed while
    # the others are being replaced is redone, not taken for a finished lang (they come back last).
    for marker in (lang_dir / "L_disambig.fst", stats_path):
        marker.unlink(missing_ok=True)
    lang_dir.mkdir(parents=True, exist_ok=True)
    write_text(lang_dir / "phones.txt", symbol_table_text(phone_list))
    write_text(lang_dir / "words.txt", symbol_table_text(word_list))
    write_lexicon(lexicon, lang_dir / "lexicon.txt")
    write_text(lang_dir / "lexicon_disambig.txt", "".join(f"{w} {' '.join(p)}\n" for w, p in entries))
    for name, items in (
        ("silence.txt", SILENCE_PHONES),
        ("nonsilence.txt", nonsil),
        ("optional_silence.txt", [SILENCE_PHONE]),
        ("disambig.txt", disambig),
    ):
        write_text(lang_dir / "phones" / name, "".join(f"{x}\n" for x in items))
    plain = [(w, p) for w, prons in lexicon.items() for p in prons]
    compile_fst(lexicon_fst_text(plain, phones, words, sil_prob), lang_dir / "L.fst")

    stats = {
        "words": len(lexicon),
        "pronunciations": len(plain),
        "phones": {"silence": len(SILENCE_PHONES), "nonsilence": len(nonsil), "disambig": len(disambig)},
        "primary_lexicon": str(lexicon_path) if lexicon_path else None,
        "graphemic": graphemic,
        "phone_symbol_table": str(phone_symbol_table) if phone_symbol_table else None,
        "added_words": {w: s for w, s in sorted(sources.items())},
        "splits": {},
    }
    splits = {"train": None, **(report_cuts or {})}
    for split, path in splits.items():
        counts = train_counts if path is None else transcript_words([path])
        not_primary = {w: c for w, c in counts.items() if primary is not None and w not in primary_words}
        oov = {w: c for w, c in counts.items() if w not in lexicon}
        tokens = sum(counts.values())
        stats["splits"][split] = {
            "word_tokens": tokens,
            "word_types": len(counts),
            "oov_tokens": sum(oov.values()),
            "oov_types": len(oov),
            "oov_rate": round(100.0 * sum(oov.values()) / max(tokens, 1), 3),
            "oov_words": sorted(oov),
            "not_in_primary_lexicon": len(not_primary),
        }
        log.info(
            f"lang: {split}: {tokens} word tokens, {len(counts)} types; OOV (not in vocabulary) "
            f"{sum(oov.values())} tokens / {len(oov)} types ({stats['splits'][split]['oov_rate']}%)"
        )
    # L_disambig last: with the stats file it marks the stage as complete.
    write_json(stats_path, stats)
    compile_fst(lexicon_fst_text(entries, phones, words, sil_prob, disambig_loop=True), lang_dir / "L_disambig.fst")
    log.info(f"lang: {len(lexicon)} words, {len(nonsil)} nonsilence phones, {len(disambig)} disambiguation symbols -> {lang_dir}")
    return stats


# ---------------------------------------------------------------- CLI: asr-kd lang


def add_arguments(parser) -> None:
    parser.add_argument("lang_dir", type=Path, help="output, e.g. data/lang")
    parser.add_argument("--vocab-cuts", type=Path, nargs="+", required=True,
                        help="cuts manifests whose transcripts form the vocabulary (training data)")
    parser.add_argument("--report-cuts", nargs="*", default=[], metavar="SPLIT=PATH",
                        help="other splits whose OOV rate is reported, e.g. test=data/manifests/x_cuts_test.jsonl.gz")
    parser.add_argument("--lexicon", type=Path, help="primary lexicon (WORD PH1 PH2 ...)")
    parser.add_argument("--no-cmudict", action="store_true", help="do not use CMUdict for missing words")
    parser.add_argument("--graphemic", action="store_true", help="letters as phones (no pronunciation lexicon)")
    parser.add_argument("--keep-stress", action="store_true", help="keep ARPAbet stress markers")
    parser.add_argument("--sil-prob", type=float, default=0.5, help="probability of optional silence after a word")
    parser.add_argument("--phone-symbol-table", type=Path, metavar="MODEL_LANG/phones.txt",
                        help="keep a trained model's phone ids (Kaldi's prepare_lang.sh --phone-symbol-table; an "
                        "export's phones.json works too); "
                        "a word pronounced with a phone outside it is an error")
    parser.add_argument("--force", action="store_true", help="rebuild even if the lang directory is complete")


def run(args) -> int:
    report = {}
    for item in args.report_cuts:
        split, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--report-cuts expects SPLIT=PATH, got {item!r}")
        report[split] = Path(path)
    prepare_lang(
        args.lang_dir,
        args.vocab_cuts,
        report,
        lexicon_path=args.lexicon,
        use_cmudict=not args.no_cmudict,
        graphemic=args.graphemic,
        keep_stress=args.keep_stress,
        sil_prob=args.sil_prob,
        force=args.force,
        phone_symbol_table=args.phone_symbol_table,
    )
    return 0
