"""Kaldi's own monophone training and alignment (the ``kaldi-hmm-gmm`` package), for a peer check.

Runs in its own process (see :mod:`asr_kd.hmm.kaldi_peer`): ``kaldi_hmm_gmm`` must be imported
before any ``kaldifst``, and it needs kaldifst 1.7.x, so ``PYTHONPATH`` points at a separate
install of both. It mirrors ``steps/train_mono.sh`` (gmm-init-mono, compile-train-graphs,
align-equal-compiled, gmm-acc-stats-ali, gmm-est with mix-up, gmm-align-compiled) on the
features, transcripts and ``data/lang`` given, with the same HMM topology as asr_kd's
(left-to-right, ``num_sil_states`` states for silence phones), and writes each utterance's
per-frame phone, pdf and acoustic log-likelihood.

usage: python -m asr_kd.hmm.kaldi_peer_worker IN.npz LANG_DIR OUT.npz CONFIG_JSON
"""
import kaldi_hmm_gmm as khg  # noqa: I001  (first: importing kaldifst before it hangs)
import kaldifst

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from asr_kd.hmm.lang_info import LangInfo  # after kaldi_hmm_gmm and kaldifst (above)


def _topology(lang_phones, silence, num_states, num_sil_states) -> "khg.HmmTopology":
    s = "<Topology> "
    for group, n in ((sorted(set(lang_phones) - set(silence)), num_states), (sorted(silence), num_sil_states)):
        s += "<TopologyEntry> <ForPhones> " + " ".join(map(str, group)) + " </ForPhones> "
        for i in range(n):
            s += f"<State> {i} <PdfClass> {i} <Transition> {i} 0.75 <Transition> {i + 1} 0.25 </State> "
        s += f"<State> {n} </State> </TopologyEntry> "
    s += "</Topology>"
    topo = khg.HmmTopology()
    topo.read(s)
    return topo


def main(in_npz, lang_dir, out_npz, cfg) -> None:
    lang = LangInfo.load(lang_dir)
    data = np.load(in_npz, allow_pickle=True)
    utts = list(data["utts"])
    feats = {u: np.ascontiguousarray(f, dtype=np.float32) for u, f in zip(utts, data["feats"])}
    texts = {u: list(t) for u, t in zip(utts, data["texts"])}
    topo = _topology(lang.real_phones, lang.silence_phones, cfg["num_states"], cfg["num_sil_states"])
    tree = khg.monophone_context_dependency(phones=topo.phones,
                                            phone2num_pdf_classes=topo.get_phone_to_num_pdf_classes())
    allx = np.concatenate(list(feats.values())).astype(np.float64)
    mean, var = allx.mean(0), allx.var(0)
    gmm = khg.DiagGmm(nmix=1, dim=allx.shape[1])
    gmm.set_weights(np.ones(1, dtype=np.float32))
    gmm.set_means(mean[None].astype(np.float32))
    gmm.set_invvars((1.0 / var)[None].astype(np.float32))
    gmm.compute_gconsts()
    am = khg.AmDiagGmm()
    for _ in range(tree.num_pdfs):
        am.add_pdf(gmm)
    tm = khg.TransitionModel(ctx_dep=tree, hmm_topo=topo)
    L = kaldifst.StdVectorFst.read(str(Path(lang_dir) / "L.fst"))
    kaldifst.arcsort(L, sort_type="olabel")
    disambig = sorted(i for p, i in lang.phones.items() if p.startswith("#"))
    # compile-train-graphs sets both scales to 0: transition probs are added at alignment time
    # (they change every iteration); the C++ struct's defaults (1.0) would count them twice
    gopts = khg.TrainingGraphCompilerOptions()
    gopts.transition_scale, gopts.self_loop_scale = 0.0, 0.0
    gc = khg.TrainingGraphCompiler(trans_model=tm, ctx_dep=tree, lex_fst=L, disambig_syms=disambig, opts=gopts)

    def word_ids(words):
        return [lang.words[w] if w in lang.words else lang.words[lang.oov_word] for w in words]

    if cfg.get("mode") == "align":  # align with asr_kd's model instead of training one
        _load_our_model(am, tm, data)
        ali, failed = _align_all(am, tm, gc, feats, texts, word_ids)
        _write(out_npz, am, tm, feats, ali, failed, [])
        return
    ali, failed = {}, {}
    for i, u in enumerate(utts):  # align-equal-compiled
        ok, afst = kaldifst.equal_align(ifst=gc.compile_graph_from_text(word_ids(texts[u])),
                                        length=feats[u].shape[0], rand_seed=i, num_retries=10)
        if not ok:
            failed[u] = "equal alignment failed"
            continue
        ok, seq, _, _ = kaldifst.get_linear_symbol_sequence(afst)
        ali[u] = list(seq)
    realign = set(cfg["realign_iters"])
    cur_gauss = tree.num_pdfs
    inc = max(0, cfg["max_gauss"] - cur_gauss) / max(1, cfg["max_iter_inc"])
    history = []

    def align_all():
        return _align_all(am, tm, gc, feats, texts, word_ids)

    for it in range(cfg["num_iters"] + 1):
        t0 = time.time()
        if it > 0 and it in realign:
            ali, failed = align_all()
        accs = khg.AccumAmDiagGmm()
        accs.init(am, khg.str_to_gmm_flags("mvwt"))
        tstats = tm.init_stats()
        like, frames = 0.0, 0
        for u, seq in ali.items():
            x = feats[u]
            for t, tid in enumerate(seq):
                tstats = tm.accumulate(prob=1.0, trans_id=tid, stats=tstats)
                like += accs.accumulate_for_gmm(model=am, data=x[t], gmm_index=tm.transition_id_to_pdf(tid), weight=1.0)
            frames += len(seq)
        tm.mle_update(tstats, khg.MleTransitionUpdateConfig())
        khg.mle_am_diag_gmm_update(config=khg.MleDiagGmmOptions(), amdiag_gmm_acc=accs,
                                   flags=khg.str_to_gmm_flags("mvwt"), am_gmm=am)
        if it < cfg["max_iter_inc"]:
            occs = np.array([accs.get_acc(i).occupancy.sum() for i in range(accs.num_accs)], dtype=np.float32)
            cur_gauss = min(cfg["max_gauss"], int(cur_gauss + inc))
            am.split_by_count(state_occs=occs, target_components=cur_gauss, perturb_factor=0.01, power=0.2,
                              min_count=20.0)
        history.append({"iter": it, "realigned": it in realign and it > 0, "loglike_per_frame": like / max(frames, 1),
                        "frames": frames, "utts_aligned": len(ali), "num_gauss": am.num_gauss,
                        "seconds": round(time.time() - t0, 2)})
        print(json.dumps(history[-1]), flush=True)
    ali, failed = align_all()
    _write(out_npz, am, tm, feats, ali, failed, history)


def _align_all(am, tm, gc, feats, texts, word_ids):
    """gmm-align-compiled with train_mono.sh's scales and beams."""
    align_cfg = khg.AlignConfig()
    align_cfg.beam, align_cfg.retry_beam = 10.0, 40.0
    out, fails = {}, {}
    for u in feats:
        fst = gc.compile_graph_from_text(word_ids(texts[u]))
        khg.add_transition_probs(trans_model=tm, transition_scale=1.0, self_loop_scale=0.1, fst=fst)
        dec = khg.DecodableAmDiagGmmScaled(am=am, tm=tm, feats=feats[u], scale=0.1)
        r = khg.align_utterance_wrapper(config=align_cfg, utt=u, acoustic_scale=0.1, fst=fst, decodable=dec,
                                        num_done=0, num_error=0, num_retried=0, tot_like=0.0, frame_count=0)
        if r[0] == 1 and len(r[5]) == feats[u].shape[0]:
            out[u] = list(r[5])
        else:
            fails[u] = "kaldi alignment failed"
    return out, fails


def _load_our_model(am, tm, data) -> None:
    """Replace the AM's pdfs by asr_kd's GMMs (same pdf numbering: phones in id order, then
    states) and set the transition model to asr_kd's self-loop probabilities (via statistics)."""
    means, vars_, logw = data["means"], data["vars"], data["log_weights"]
    loops = json.loads(str(data["loops"]))
    new = khg.AmDiagGmm()
    for p in range(means.shape[0]):
        used = np.isfinite(logw[p])
        g = khg.DiagGmm(nmix=int(used.sum()), dim=means.shape[2])
        g.set_weights(np.exp(logw[p][used]).astype(np.float32))
        g.set_means(means[p][used].astype(np.float32))
        g.set_invvars((1.0 / vars_[p][used]).astype(np.float32))
        g.compute_gconsts()
        new.add_pdf(g)
    am.copy_from_am_diag_gmm(new)
    stats = tm.init_stats()
    for tid in range(1, tm.num_transition_ids + 1):
        tup = str(tm.tuples[tm.id2state[tid] - 1])
        phone = int(re.search(r"phone=(\d+)", tup).group(1))
        state = int(re.search(r"hmm_state=(\d+)", tup).group(1))
        p_loop = loops[str(phone)][state]
        stats[tid] = 1e6 * (p_loop if tm.is_self_loop(tid) else 1.0 - p_loop)
    cfg = khg.MleTransitionUpdateConfig()
    cfg.floor = 1e-6
    tm.mle_update(stats, cfg)


def _write(out_npz, am, tm, feats, ali, failed, history) -> None:
    out = {"utts": [], "phones": [], "pdfs": [], "loglikes": []}
    for u, seq in ali.items():
        x = feats[u]
        pdfs = [tm.transition_id_to_pdf(t) for t in seq]
        out["utts"].append(u)
        out["phones"].append(np.array([tm.transition_id_to_phone(t) for t in seq], dtype=np.int32))
        out["pdfs"].append(np.array(pdfs, dtype=np.int32))
        out["loglikes"].append(np.array([am.log_likelihood(pdf_index=p, data=x[t]) for t, p in enumerate(pdfs)]))
    np.savez(out_npz, utts=np.array(out["utts"], dtype=object), phones=np.array(out["phones"], dtype=object),
             pdfs=np.array(out["pdfs"], dtype=object), loglikes=np.array(out["loglikes"], dtype=object),
             history=json.dumps(history), failed=json.dumps(failed), num_gauss=am.num_gauss)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
