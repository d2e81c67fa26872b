"""A lang on a trained model's phone set (Kaldi's ``prepare_lang.sh --phone-symbol-table``).

``asr-kd lang NEW_LANG --phone-symbol-table MODEL_LANG/phones.txt ...`` builds a lang for a new
vocabulary whose ``phones.txt`` keeps every phone of the model's table at its id, so that the model
(its tree, transitions and HMMs, which are indexed by phone id) and a graph built from the new lang
agree (:func:`asr_kd.model_info.check_phones`). Words are pronounced as without the table (the
given lexicon, then CMUdict, then the letter-to-phone fallback); a pronunciation that uses a phone
not in the table is an error naming the word and the phone. Phones of the table that the new
lexicon does not use stay in it. Disambiguation symbols ``#k`` of the table keep their ids; more
of them, if the new lexicon needs more, are appended after the table's last id.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from asr_kd.lang.lexicon import Lexicon
from asr_kd.utils import Pathlike, UserError

EPS = "<eps>"
SHOWN = 10


def _json_table(path: Path) -> List[str]:
    """The lines of a ``phones.txt`` from an export's ``phones.json`` (its real phones and ids,
    :func:`asr_kd.model_info.phone_table`), with ``<eps>`` at 0."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        symbols = [(str(p), int(i)) for p, i in table["symbols"]]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not an export's phones.json ({type(e).__name__}: {e})") from e
    return [f"{EPS} 0"] + [f"{p} {i}" for p, i in symbols]


def read_phone_table(path: Pathlike) -> List[str]:
    """A ``phones.txt`` as a list indexed by id; ids must run 0, 1, 2... with ``<eps>`` at 0. An
    export's ``phones.json`` (``asr-kd export``) stands for its model's table."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--phone-symbol-table {path}: not found (the model's lang/phones.txt, or an export's "
                        "phones.json)")
    if path.suffix == ".json":
        lines = _json_table(path)
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
    by_id: Dict[int, str] = {}
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit():
            raise UserError(f"{path}:{n}: not a 'PHONE ID' line: {line.strip()!r}")
        phone, i = fields[0], int(fields[1])
        if i in by_id or phone in by_id.values():
            raise UserError(f"{path}:{n}: phone {phone!r} or id {i} listed twice")
        by_id[i] = phone
    if by_id.get(0) != EPS or sorted(by_id) != list(range(len(by_id))):
        raise UserError(f"{path}: ids must run from 0 ({EPS}) without gaps, as in a Kaldi phones.txt")
    return [by_id[i] for i in range(len(by_id))]


def phones_from_table(path: Pathlike, lexicon: Lexicon, silence: Sequence[str],
                      max_disambig: int) -> Tuple[List[str], List[str], List[str]]:
    """The new lang's phone list (index = id), nonsilence phones and disambiguation symbols.

    Raises :class:`UserError` naming the words whose pronunciations use phones not in the table
    (and the silence phones the table lacks)."""
    table = read_phone_table(path)
    known = set(table)
    missing_sil = [p for p in silence if p not in known]
    if missing_sil:
        raise UserError(f"{path}: no {' '.join(missing_sil)} (silence phones this lang needs): "
                        "is it the phones.txt of a lang made by asr-kd lang?")
    bad = {}
    for word, prons in lexicon.items():
        for pron in prons:
            outside = [p for p in pron if p not in known]
            if outside:
                bad.setdefault(word, outside[0])
                break
    if bad:
        shown = ", ".join(f"{w} (phone {p})" for w, p in list(bad.items())[:SHOWN])
        hint = ""
        stressed = [p for p in table if p[-1:].isdigit() and not p.startswith("#")]
        if stressed and not any(p[-1:].isdigit() for p in bad.values()):
            hint = "; the table has stress markers: pass --keep-stress"
        raise UserError(f"{len(bad)} word(s) cannot be pronounced with the phones of {path}: {shown}"
                        f"{' ...' if len(bad) > SHOWN else ''}{hint}")
    disambig = [p for p in table if p.startswith("#")]
    extra = [f"#{k}" for k in range(max_disambig + 1) if f"#{k}" not in known]
    phone_list = table + extra
    nonsil = [p for p in table if p != EPS and p not in silence and not p.startswith("#")]
    return phone_list, nonsil, disambig + extra
