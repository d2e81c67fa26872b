"""Phones, lexicons, word/phone symbol tables and the lexicon FST L (Kaldi's data/lang).

The n-gram LM and G belong to the decoder (issue: k2 HMM decoder) and will live here too.
"""
from asr_kd.lang.lexicon import build_lexicon, graphemic_pronunciation, read_lexicon
from asr_kd.lang.prepare_lang import Lang, add_disambig_symbols, prepare_lang, read_symbol_table

__all__ = ["Lang", "add_disambig_symbols", "build_lexicon", "graphemic_pronunciation", "prepare_lang",
           "read_lexicon", "read_symbol_table"]
