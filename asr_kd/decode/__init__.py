"""Decoding with k2: HCLG construction (graph.py) and batched Viterbi search (decoder.py)."""
from asr_kd.decode.decoder import DecodeOpts, Decoder, batches_by_frames, rescore_lm_weights
from asr_kd.decode.graph import build_graph, compose_hclg, compose_lg, to_k2

__all__ = ["DecodeOpts", "Decoder", "batches_by_frames", "build_graph", "compose_hclg", "compose_lg",
           "rescore_lm_weights", "to_k2"]
