"""N-gram language models: estimation (ours), ARPA files, and G.fst through kaldilm.

``NgramLM.estimate`` counts n-grams of the *training* transcripts and smooths them with
interpolated modified Kneser-Ney (Chen & Goodman 1998; the default) or Witten-Bell. The lowest
order interpolates with the uniform distribution over the vocabulary, so every word of the
lexicon gets probability, seen in training or not. The model is written as ARPA with the
interpolated probabilities of the seen n-grams and the interpolation weights as back-off weights,
which represents an interpolated model exactly:

    p(w | h) = p*(w | h)                  if (h, w) is listed
             = bow(h) * p(w | h')         otherwise (h' = h without its first word)

``ArpaLM`` reads an ARPA file back and evaluates it (probabilities, perplexity), and
``arpa_to_fst`` makes G with ``kaldilm`` (back-off arcs carry ``#0`` on the input side, so G is
not an acceptor; ``<s>``/``</s>`` become epsilon and final weights).

Plain-text training data, two LMs interpolated into one and perplexity on held-out text:
:mod:`asr_kd.lang.lm_mix`.
"""
from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import kaldifst
import kaldilm
from lhotse import load_manifest_lazy

from asr_kd.data.text import normalize_text
from asr_kd.lang.prepare_lang import read_symbol_table
from asr_kd.utils import Pathlike, UserError, atomic_path, write_json, write_text

log = logging.getLogger(__name__)

BOS, EOS = "<s>", "</s>"
Ngram = Tuple[str, ...]


def _kn_discounts(count_of_counts: Counter) -> Tuple[float, float, float]:
    """Modified-KN discounts D1, D2, D3+ from the counts of counts n1..n4 (Chen & Goodman).

    Small corpora can lack some n_k; fall back to the Kneser-Ney defaults D = 0.5 * k-ish values
    that keep 0 <= D_k <= k.
    """
    n1, n2, n3, n4 = (count_of_counts.get(k, 0) for k in (1, 2, 3, 4))
    if n1 == 0 or n2 == 0:
        return 0.5, 1.0, 1.5
    y = n1 / (n1 + 2 * n2)
    d1 = 1 - 2 * y * n2 / n1
    d2 = 2 - 3 * y * n3 / n2 if n3 else 1.0
    d3 = 3 - 4 * y * n4 / n3 if n3 and n4 else 1.5
    clamp = lambda d, k: min(max(d, 0.05), k)  # noqa: E731
    return clamp(d1, 1), clamp(d2, 2), clamp(d3, 3)


class NgramLM:
    """An interpolated n-gram model: ``prob[n][ngram]`` and ``bow[n][history]`` for n = 1..order."""

    def __init__(self, order: int, vocab: Sequence[str]):
        self.order = order
        self.vocab = list(dict.fromkeys(w for w in vocab if w not in (BOS, EOS)))
        self.prob: List[Dict[Ngram, float]] = [dict() for _ in range(order + 1)]
        self.bow: List[Dict[Ngram, float]] = [dict() for _ in range(order + 1)]

    # ------------------------------------------------------------ estimation
    @classmethod
    def estimate(
        cls,
        sentences: Iterable[Sequence[str]],
        vocab: Sequence[str],
        order: int = 3,
        smoothing: str = "kn",
        unk: Optional[str] = "<UNK>",
    ) -> "NgramLM":
        """Estimate from tokenized ``sentences``; words outside ``vocab`` are mapped to ``unk``
        (or dropped from the counts when ``unk`` is None)."""
        if smoothing not in ("kn", "wb"):
            raise ValueError(f"smoothing must be 'kn' (modified Kneser-Ney) or 'wb' (Witten-Bell), not {smoothing!r}")
        lm = cls(order, vocab)
        known = set(lm.vocab)
        counts: List[Counter] = [Counter() for _ in range(order + 1)]
        oov = 0
        for sent in sentences:
            words = []
            for w in sent:
                if w not in known:
                    oov += 1
                    if unk is None:
                        continue
                    w = unk
                words.append(w)
            tokens = [BOS] + words + [EOS]
            for i in range(1, len(tokens)):  # every predicted token, with each history length
                for n in range(1, min(order, i + 1) + 1):
                    counts[n][tuple(tokens[i - n + 1 : i + 1])] += 1
        if oov:
            log.warning(f"LM: {oov} training tokens outside the vocabulary mapped to {unk}")
        lm._smooth(counts, smoothing)
        return lm

    def _smooth(self, raw: List[Counter], smoothing: str) -> None:
        order = self.order
        # Kneser-Ney lower orders use continuation counts N1+(. w), except n-grams that start
        # with <s>, which nothing can precede.
        counts: List[Counter] = [Counter() for _ in range(order + 1)]
        counts[order] = raw[order]
        for n in range(order - 1, 0, -1):
            if smoothing == "kn":
                cont: Counter = Counter()
                for g in raw[n + 1]:
                    cont[g[1:]] += 1
                for g, c in raw[n].items():
                    counts[n][g] = c if g[0] == BOS else cont.get(g, 0)
                counts[n] = Counter({g: c for g, c in counts[n].items() if c > 0})
            else:
                counts[n] = raw[n]
        targets = self.vocab + [EOS]
        uniform = 1.0 / len(targets)
        for n in range(1, order + 1):
            by_hist: Dict[Ngram, Dict[str, int]] = defaultdict(dict)
            for g, c in counts[n].items():
                by_hist[g[:-1]][g[-1]] = c
            if smoothing == "kn":
                d1, d2, d3 = _kn_discounts(Counter(counts[n].values()))
            for h, followers in by_hist.items():
                total = sum(followers.values())
                if smoothing == "kn":
                    disc = lambda c: d1 if c == 1 else d2 if c == 2 else d3  # noqa: E731
                    gamma = sum(disc(c) for c in followers.values()) / total
                    mass = {w: max(c - disc(c), 0.0) / total for w, c in followers.items()}
                else:
                    types = len(followers)
                    gamma = types / (total + types)
                    mass = {w: c / (total + types) for w, c in followers.items()}
                for w, m in mass.items():
                    lower = uniform if n == 1 else self.prob_of(h[1:], w)
                    self.prob[n][h + (w,)] = m + gamma * lower
                if n == 1:
                    # Unigrams never seen (lexicon words absent from the training text) share gamma.
                    for w in targets:
                        if (w,) not in self.prob[1]:
                            self.prob[1][(w,)] = gamma * uniform
                else:
                    self.bow[n - 1][h] = gamma
        if not self.prob[1]:
            for w in targets:
                self.prob[1][(w,)] = uniform

    # ------------------------------------------------------------ evaluation
    def prob_of(self, history: Ngram, word: str) -> float:
        """p(word | history) with back-off, history truncated to order - 1 words."""
        history = tuple(history)[-(self.order - 1):] if self.order > 1 else ()
        weight = 1.0
        while True:
            p = self.prob[len(history) + 1].get(history + (word,))
            if p is not None:
                return weight * p
            if not history:
                return 0.0
            weight *= self.bow[len(history)].get(history, 1.0)
            history = history[1:]

    # ------------------------------------------------------------ ARPA
    def to_arpa(self) -> str:
        lines = ["", "\\data\\"]
        entries = []
        for n in range(1, self.order + 1):
            grams = dict(self.prob[n])
            if n == 1:
                grams[(BOS,)] = None  # <s> is a context only: probability -99 in ARPA
            entries.append(grams)
            lines.append(f"ngram {n}={len(grams)}")
        for n, grams in enumerate(entries, 1):
            lines += ["", f"\\{n}-grams:"]
            for g in sorted(grams, key=lambda g: g):
                p = grams[g]
                logp = -99.0 if p is None else math.log10(p)
                fields = [f"{logp:.6f}", " ".join(g)]
                if n < self.order and g in self.bow[n]:
                    fields.append(f"{math.log10(self.bow[n][g]):.6f}")
                lines.append("\t".join(fields))
        lines += ["", "\\end\\", ""]
        return "\n".join(lines)

    def write_arpa(self, path: Pathlike) -> None:
        write_text(path, self.to_arpa())


class ArpaLM:
    """An ARPA back-off model read from a file (or string), for evaluation and checks."""

    def __init__(self, text: str):
        self.logp: Dict[Ngram, float] = {}
        self.logbow: Dict[Ngram, float] = {}
        self.order = 0
        section = 0
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("ngram ") or line in ("\\data\\", "\\end\\"):
                continue
            if line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1:].split("-")[0])
                self.order = max(self.order, section)
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            if "\t" in line:
                logp, gram = float(fields[0]), tuple(fields[1].split())
                bow = float(fields[2]) if len(fields) > 2 else None
            else:
                logp, gram = float(fields[0]), tuple(fields[1 : 1 + section])
                bow = float(fields[1 + section]) if len(fields) > 1 + section else None
            self.logp[gram] = logp
            if bow is not None:
                self.logbow[gram] = bow

    @classmethod
    def read(cls, path: Pathlike) -> "ArpaLM":
        return cls(Path(path).read_text(encoding="utf-8"))

    @property
    def vocab(self) -> List[str]:
        return [g[0] for g in self.logp if len(g) == 1]

    def log10_prob(self, history: Sequence[str], word: str) -> float:
        history = tuple(history)[-(self.order - 1):] if self.order > 1 else ()
        acc = 0.0
        while True:
            lp = self.logp.get(history + (word,))
            if lp is not None:
                return acc + lp
            if not history:
                return -math.inf
            acc += self.logbow.get(history, 0.0)
            history = history[1:]


def arpa_to_fst_text(arpa: Pathlike, words_txt: Pathlike, disambig_symbol: str = "#0") -> str:
    """G in OpenFst text form (kaldilm's arpa2fst, natural-log costs)."""
    return kaldilm.arpa2fst(
        input_arpa=str(arpa),
        output_fst="",
        disambig_symbol=disambig_symbol,
        read_symbol_table=str(words_txt),
    )


def arpa_to_fst(arpa: Pathlike, words_txt: Pathlike, output: Pathlike, disambig_symbol: str = "#0") -> None:
    """Write G.fst (kaldifst binary, arcs sorted by input label) from an ARPA file."""
    fst = kaldifst.compile(arpa_to_fst_text(arpa, words_txt, disambig_symbol).strip() + "\n", acceptor=False)
    kaldifst.arcsort(fst, sort_type="ilabel")
    with atomic_path(output) as tmp:
        fst.write(str(tmp))


def lm_vocabulary(words: Iterable[str], train: Sequence[Sequence[str]], unk: str = "<UNK>") -> List[str]:
    """The LM's vocabulary: the lexicon's words, without ``unk`` unless training text has OOVs.

    When no training token maps to ``unk``, its phone (SPN) never occurs in training, its model
    is untrained, and a decoder allowed to output ``unk`` would use it as a garbage model.
    """
    words = [w for w in words if w not in ("<eps>", "#0", BOS, EOS)]
    known = set(words)
    if any(w == unk or w not in known for s in train for w in s):
        return words
    return [w for w in words if w != unk]


# ---------------------------------------------------------------- CLI: asr-kd lm


def add_arguments(parser) -> None:
    parser.add_argument("--lang-dir", type=Path, required=True, help="its words.txt is the vocabulary")
    parser.add_argument("--train-cuts", type=Path, nargs="*", default=[],
                        help="cuts whose transcripts train the LM (training data only)")
    parser.add_argument("--text", type=Path, nargs="*", default=[], metavar="FILE",
                        help="plain text files (one sentence a line, no ids) that train the LM too")
    parser.add_argument("--out-dir", type=Path, required=True, help="e.g. data/lm")
    parser.add_argument("--order", type=int, default=3, help="n-gram order (3: a trigram LM)")
    parser.add_argument("--smoothing", choices=["kn", "wb"], default="kn",
                        help="interpolated modified Kneser-Ney or Witten-Bell")
    parser.add_argument("--mix", type=Path, metavar="OTHER.arpa",
                        help="interpolate the estimated LM with this ARPA LM (its words outside the lang are dropped)")
    parser.add_argument("--mix-text", type=Path, nargs="+", metavar="FILE",
                        help="estimate a second LM (same order, smoothing, vocabulary) from these texts and interpolate")
    parser.add_argument("--mix-weight", type=float, default=0.5,
                        help="weight of the --mix / --mix-text LM: p = (1 - w) p_train + w p_mix")
    parser.add_argument("--eval-cuts", nargs="*", default=[], metavar="NAME=PATH",
                        help="sets whose perplexity is reported (never used for estimation)")
    parser.add_argument("--ppl-text", type=Path, nargs="*", default=[], metavar="FILE",
                        help="held-out plain text files whose perplexity is reported (never used for estimation)")
    parser.add_argument("--force", action="store_true", help="re-estimate even if the ARPA, G.fst and stats exist")


def run(args) -> int:
    from asr_kd.lang import lm_mix  # here, not at the top: lm_mix imports this module

    name = f"{args.order}gram"
    arpa, g, stats_path = (args.out_dir / f"lm_{name}.arpa", args.out_dir / f"G_{name}.fst",
                           args.out_dir / f"lm_{name}.json")
    if not args.force and arpa.exists() and g.exists() and stats_path.exists():
        log.info(f"{g} exists; skipping (use --force to redo)")
        return 0
    if not args.train_cuts and not args.text:
        raise UserError("no training text: give --train-cuts and/or --text")
    if args.mix and args.mix_text:
        raise UserError("--mix (an ARPA LM) and --mix-text (texts to estimate one from) are alternatives")
    if not 0.0 < args.mix_weight < 1.0:
        raise UserError(f"--mix-weight must be between 0 and 1, not {args.mix_weight}")

    def sentences(path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found: run the prepare stage first")
        return [normalize_text(s.text or "").split() for c in load_manifest_lazy(path) for s in c.supervisions]

    words = read_symbol_table(args.lang_dir / "words.txt")
    train = [s for p in args.train_cuts for s in sentences(p)] + lm_mix.read_text(args.text)
    mix_train = lm_mix.read_text(args.mix_text) if args.mix_text else []
    vocab = lm_vocabulary(words, train + mix_train)
    lm = NgramLM.estimate(train, vocab, args.order, args.smoothing)
    components = {}
    if args.mix or args.mix_text:
        components["train"] = ArpaLM(lm.to_arpa())
        if args.mix:
            if not args.mix.is_file():
                raise UserError(f"--mix {args.mix} not found")
            components["mix"] = ArpaLM.read(args.mix)
            lm_mix.restrict_check(components["mix"], vocab, str(args.mix))
        else:
            components["mix"] = ArpaLM(NgramLM.estimate(mix_train, vocab, args.order, args.smoothing).to_arpa())
        lm = lm_mix.interpolate(components["train"], components["mix"], args.mix_weight, vocab, args.order)
        log.info(f"LM {name}: interpolated (1 - {args.mix_weight}) * train + {args.mix_weight} * "
                 f"{args.mix or ' '.join(map(str, args.mix_text))}")
    lm.write_arpa(arpa)
    arpa_to_fst(arpa, args.lang_dir / "words.txt", g)
    model = ArpaLM.read(arpa)
    stats = {"order": args.order, "smoothing": args.smoothing, "vocabulary": len(vocab),
             "train_sentences": len(train), "train_cuts": [str(p) for p in args.train_cuts],
             "text": [str(p) for p in args.text],
             "ngrams": {n: len(lm.prob[n]) for n in range(1, args.order + 1)}, "perplexity": {}}
    if components:
        stats["mix"] = {"lm": str(args.mix) if args.mix else None,
                        "text": [str(p) for p in args.mix_text or []], "text_sentences": len(mix_train),
                        "weight": args.mix_weight}
    eval_sets = [("train", train)]
    for item in args.eval_cuts:
        set_name, _, path = item.partition("=")
        eval_sets.append((set_name, sentences(path)))
    eval_sets += [(f"text:{p}", lm_mix.read_text([p])) for p in args.ppl_text]
    for set_name, sents in eval_sets:
        result = lm_mix.perplexity(model, sents)
        if components:
            result["components"] = {k: lm_mix.perplexity(m, sents)["perplexity"] for k, m in components.items()}
        stats["perplexity"][set_name] = result
        log.info(f"LM {name}: {set_name} perplexity {result['perplexity']:.2f} over {result['tokens']} tokens"
                 + (f" ({result['oov_tokens']} OOV tokens left out)" if result["oov_tokens"] else "")
                 + (f"; alone: {result['components']}" if components else ""))
    write_json(stats_path, stats)
    return 0
