"""HCLG construction on a toy lexicon and exact decoding of toy utterances with k2."""
import os
import numpy as np
import pytest
import torch
from lhotse import CutSet, MonoCut, SupervisionSegment

k2 = pytest.importorskip("k2")  # before asr_kd.decode, which imports k2

from asr_kd.decode import DecodeOpts, Decoder, batches_by_frames, build_graph, rescore_lm_weights
from asr_kd.lang import Lang, prepare_lang
from asr_kd.lang.lm import NgramLM, arpa_to_fst


class Topo:
    def __init__(self, phones, n=3):
        self.num_states = {p: n for p in phones}

    def __getitem__(self, p):
        return self.num_states[p]


class MonoCtx:
    """pdf = 3 * (phone index) + state; context_width 1 (or 3, ignoring the context)."""

    def __init__(self, phones, context_width=1):
        self.index = {p: i for i, p in enumerate(sorted(phones))}
        self.context_width = context_width
        self.num_pdfs = 3 * len(phones)

    def pdf(self, left, phone, right, state):
        return 3 * self.index[phone] + state


class Trans:
    def __init__(self, topo, loop=0.6):
        self.topo = topo
        self.loop = {p: np.full(n, loop) for p, n in topo.num_states.items()}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    texts = ["yes no", "no no yes", "yes yes", "no"]
    cuts = CutSet.from_cuts(
        MonoCut(id=f"u{i}", start=0, duration=1, channel=0,
                supervisions=[SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0, duration=1, text=t)])
        for i, t in enumerate(texts))
    cuts.to_file(d / "cuts.jsonl.gz")
    prepare_lang(d / "lang", [d / "cuts.jsonl.gz"])
    lang = Lang.load(d / "lang")
    vocab = [w for w in lang.words if w not in ("<eps>", "#0", "<s>", "</s>")]
    NgramLM.estimate([t.upper().split() for t in texts], vocab, 2).write_arpa(d / "lm.arpa")
    arpa_to_fst(d / "lm.arpa", d / "lang" / "words.txt", d / "G.fst")
    phones = [lang.phones[p] for p in lang.silence_phones + lang.nonsilence_phones]
    return d, lang, phones


def loglikes_for(lang, ctx_dep, phone_seq, frames_per_state=3, noise=0.0, seed=0):
    """Scores that make the given phone sequence's states the clear winners."""
    rng = np.random.default_rng(seed)
    rows = []
    for name in phone_seq:
        p = lang.phones[name]
        for k in range(3):
            for _ in range(frames_per_state):
                row = np.full(ctx_dep.num_pdfs, -8.0) + noise * rng.standard_normal(ctx_dep.num_pdfs)
                row[ctx_dep.pdf(0, p, 0, k)] = 0.0
                rows.append(row)
    return torch.tensor(np.array(rows), dtype=torch.float32)


@pytest.mark.parametrize("context_width", [1, 3])
def test_decode_toy_utterances_exactly(toy, context_width):
    d, lang, phones = toy
    topo = Topo(phones)
    ctx_dep = MonoCtx(phones, context_width)
    graph = build_graph(d / "lang", d / "G.fst", ctx_dep, Trans(topo), d / f"graph{context_width}")
    assert graph.labels.min() >= -1 and int(graph.labels.max()) <= ctx_dep.num_pdfs
    assert not bool((graph.labels == 0).any()), "k2 graph must be input-epsilon-free"
    utts = {
        "a": ["SIL", "Y", "EH", "S", "N", "OW", "SIL"],
        "b": ["N", "OW", "SIL", "N", "OW", "Y", "EH", "S"],
        "c": ["Y", "EH", "S"],
    }
    decoder = Decoder(graph, DecodeOpts(acoustic_scale=1.0))
    result = decoder.decode([loglikes_for(lang, ctx_dep, seq, noise=0.5) for seq in utts.values()])
    id2word = {i: w for w, i in lang.words.items()}
    hyps = [[id2word[w] for w in ws] for ws in result.words]
    assert hyps == [["YES", "NO"], ["NO", "NO", "YES"], ["YES"]]


def test_kaldi_faster_decoder_agrees_on_the_same_graph(toy):
    """HCLG.fst (OpenFst, for Kaldi) and HCLG.pt (k2) are one graph: Kaldi's FasterDecoder over the
    same scores finds the same words with the same total cost."""
    kaldi_decoder = pytest.importorskip("kaldi_decoder")
    import k2
    import kaldifst

    d, lang, phones = toy
    ctx_dep = MonoCtx(phones, 3)
    graph = build_graph(d / "lang", d / "G.fst", ctx_dep, Trans(Topo(phones)), d / "graph_peer")
    fst = kaldifst.StdVectorFst.read(str(d / "graph_peer" / "HCLG.fst"))
    kaldi = kaldi_decoder.FasterDecoder(fst, kaldi_decoder.FasterDecoderOptions(beam=16, max_active=7000))
    k2_decoder = Decoder(graph, DecodeOpts(acoustic_scale=1.0))
    seqs = [["SIL", "Y", "EH", "S", "N", "OW"], ["N", "OW", "Y", "EH", "S", "SIL"], ["Y", "EH", "S", "Y", "EH", "S"]]
    for i, seq in enumerate(seqs):
        x = loglikes_for(lang, ctx_dep, seq, noise=2.0, seed=i)
        result = k2_decoder.decode([x])
        kaldi.decode(kaldi_decoder.DecodableCtc(x.numpy()))
        ok, best = kaldi.get_best_path()
        assert ok
        _, _, words, cost = kaldifst.get_linear_symbol_sequence(best)
        assert list(words) == result.words[0]
        best_k2 = k2.shortest_path(k2.create_fsa_vec([result.lattices[0]]), use_double_scores=True)
        k2_score = best_k2.get_tot_scores(use_double_scores=True, log_semiring=False)[0]
        assert float(k2_score) == pytest.approx(-(cost.value1 + cost.value2), rel=1e-4, abs=1e-3)


def test_graph_is_cached_and_rebuilt_when_inputs_change(toy):
    d, lang, phones = toy
    topo = Topo(phones)
    ctx_dep = MonoCtx(phones)
    build_graph(d / "lang", d / "G.fst", ctx_dep, Trans(topo), d / "graph_cache")
    mtime = (d / "graph_cache" / "HCLG.pt").stat().st_mtime_ns
    assert (d / "graph_cache" / "HCLG.fst").is_file()
    build_graph(d / "lang", d / "G.fst", ctx_dep, Trans(topo), d / "graph_cache")
    assert (d / "graph_cache" / "HCLG.pt").stat().st_mtime_ns == mtime
    build_graph(d / "lang", d / "G.fst", ctx_dep, Trans(topo), d / "graph_cache", self_loop_scale=1.0)
    assert (d / "graph_cache" / "HCLG.pt").stat().st_mtime_ns != mtime


def test_lm_weight_rescoring_and_empty_lattices(toy):
    d, lang, phones = toy
    topo = Topo(phones)
    ctx_dep = MonoCtx(phones)
    graph = build_graph(d / "lang", d / "G.fst", ctx_dep, Trans(topo), d / "graph1")
    decoder = Decoder(graph, DecodeOpts(acoustic_scale=1.0))
    x = loglikes_for(lang, ctx_dep, ["Y", "EH", "S", "N", "OW"])
    # One frame cannot pass through a word's three HMM states: the lattice is empty, reported as None.
    result = decoder.decode([x, x[:1]])
    assert result.words[1] is None and result.lattices[1] is None
    by_weight = rescore_lm_weights(result.lattices, [0.5, 1.0, 20.0], acoustic_scale=1.0)
    yes, no = lang.words["YES"], lang.words["NO"]
    assert by_weight[0.5][0] == [yes, no] and by_weight[0.5][1] is None
    assert set(by_weight) == {0.5, 1.0, 20.0}


def test_word_insertion_penalty(toy):
    import k2

    from asr_kd.decode.decoder import _words_per_arc

    d, lang, phones = toy
    topo = Topo(phones)
    ctx_dep = MonoCtx(phones)
    graph = build_graph(d / "lang", d / "G.fst", ctx_dep, Trans(topo), d / "graph1")
    x = loglikes_for(lang, ctx_dep, ["Y", "EH", "S", "N", "OW"])
    lattices = Decoder(graph, DecodeOpts(acoustic_scale=1.0)).decode([x], one_best=False).lattices
    best = k2.shortest_path(k2.create_fsa_vec(lattices), use_double_scores=True)
    assert _words_per_arc(best).sum().item() == 2  # YES NO
    plain = rescore_lm_weights(lattices, [1.0], acoustic_scale=1.0)
    assert rescore_lm_weights(lattices, [1.0], 1.0, word_ins_penalty=0.0) == plain
    # Flat acoustic scores over 60 frames: the word count is the LM's and the penalty's choice.
    flat = torch.zeros(60, x.shape[1])
    opts = DecodeOpts(acoustic_scale=1.0, search_beam=50.0, output_beam=50.0)
    lattices = Decoder(graph, opts).decode([flat], one_best=False).lattices
    n = {p: len(rescore_lm_weights(lattices, [1.0], 1.0, word_ins_penalty=p)[1.0][0]) for p in (-20.0, 0.0, 20.0)}
    assert n[-20.0] > n[0.0] >= n[20.0]  # all silence (0 words) without a bonus


def test_batches_by_frames():
    batches = batches_by_frames([10, 50, 30, 20], max_frames=60)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    assert all(max([10, 50, 30, 20][i] for i in b) * len(b) <= 60 or len(b) == 1 for b in batches)


class StoredScorer:
    """Scores stored per utterance (``items`` carry the utterance's scores as its 'features')."""

    cmvn = None

    def fit_cmvn(self, items):
        self.cmvn = "fitted on the whole set"

    def loglikes(self, items):
        assert self.cmvn == "fitted on the whole set"
        return {u: torch.as_tensor(x) for u, _, x in items}


def toy_scorer_and_graph(d, phones):
    """What each parallel decoding job loads (a module-level function: jobs are spawned)."""
    ctx_dep = MonoCtx(phones)
    return StoredScorer(), build_graph(d / "lang", d / "G.fst", ctx_dep, Trans(Topo(phones)), d / "graph1")


def test_parallel_jobs_give_the_words_of_one_job(toy):
    from asr_kd.decode.steps import decode_items, decode_parallel, frame_shards

    d, lang, phones = toy
    ctx_dep = MonoCtx(phones)
    _, graph = toy_scorer_and_graph(d, phones)
    seqs = [["SIL", "Y", "EH", "S", "N", "OW"], ["N", "OW", "Y", "EH", "S"], ["Y", "EH", "S"], ["N", "OW"],
            ["Y", "EH", "S", "Y", "EH", "S"]]
    items = [(f"u{i}", "spk", loglikes_for(lang, ctx_dep, s, noise=2.0, seed=i).numpy()) for i, s in enumerate(seqs)]
    shards = frame_shards(items, 2)
    assert len(shards) == 2 and sum(shards, []) == list(range(len(items)))
    opts = DecodeOpts(acoustic_scale=1.0)
    one = decode_items(StoredScorer(), graph, items, opts, [1.0, 2.0], [0.0, 0.5])
    two = decode_parallel(StoredScorer(), graph, items, opts, [1.0, 2.0], [0.0, 0.5], nj=2,
                          loader=toy_scorer_and_graph, loader_args=(d, phones))
    assert one[0] == two[0] and one[1] == two[1]
    assert one[1][1.0, 0.0][2] is not None


def test_a_decoding_is_kept_only_for_the_same_models_and_priors(tmp_path):
    from asr_kd.decode.steps import decode_is_current
    from asr_kd.utils import write_json

    model = tmp_path / "final.pt"
    model.write_text("m")
    summary = tmp_path / "decode_dev" / "decode.json"
    summary.parent.mkdir()
    write_json(summary, {"model": [str(model)], "priors": "model"})
    assert decode_is_current(summary, [model], [model], "model")
    assert not decode_is_current(summary, [model], [model], "exp/x/posterior_priors.json")  # other priors
    assert not decode_is_current(summary, [model], [model, model], "model")  # other models
    write_json(summary, {"model": [str(model)]})  # written before decode.json recorded the priors
    assert decode_is_current(summary, [model], [model], "model")
    assert not decode_is_current(summary, [model], [model], "exp/x/posterior_priors.json")
    os.utime(model)  # a retrained model
    os.utime(summary, (0, 0))
    assert not decode_is_current(summary, [model], [model], "model")
