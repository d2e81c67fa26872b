"""End to end through ``asr-kd gmm``: lang directory and lhotse cuts on disk, mono -> tri ->
labels, on a synthetic corpus (fbank-like 40-dim features with known segmentations)."""
import json
import os

import numpy as np
import pytest

from asr_kd.cli import main
from asr_kd.hmm.synthetic import toy_corpus, toy_lang, write_lang_dir


def _write_cuts(feats, texts, d):
    from lhotse import CutSet, MonoCut, NumpyFilesWriter, SupervisionSegment
    from lhotse.features.base import Features

    cuts = []
    with NumpyFilesWriter(d / "feats") as w:
        for u in sorted(feats):
            x = feats[u]
            key = w.write(u, x)
            dur = x.shape[0] * 0.01
            f = Features(type="fbank", num_frames=x.shape[0], num_features=x.shape[1], frame_shift=0.01,
                         sampling_rate=16000, start=0, duration=dur, storage_type=w.name,
                         storage_path=str(w.storage_path), storage_key=key)
            sup = SupervisionSegment(id=u, recording_id=u, start=0, duration=dur, text=" ".join(texts[u]),
                                     speaker="spk" + u[-1])
            cuts.append(MonoCut(id=u, start=0, duration=dur, channel=0, features=f, supervisions=[sup]))
    path = d / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def test_gmm_cli_end_to_end(tmp_path):
    lang = toy_lang()
    feats, texts, truth = toy_corpus(lang, num_utts=30, dim=40, sep=2.0)
    feats["bad"] = np.full((50, 40), np.nan, dtype=np.float32)  # NaN features
    texts["bad"] = ["W1"]
    feats["short"] = feats["utt000"][:3]
    texts["short"] = ["W1", "W2"]
    feats["silent"] = np.full((80, 40), -15.9, dtype=np.float32)  # digital silence
    texts["silent"] = ["W3"]
    feats["oov"] = feats["utt001"]
    texts["oov"] = ["W2", "NOTAWORD"]  # mapped to <UNK> (SPN) by default: still aligned
    write_lang_dir(lang, tmp_path / "lang", with_L=False)
    cuts = _write_cuts(feats, texts, tmp_path)
    common = ["--lang-dir", str(tmp_path / "lang"), "--cuts", str(cuts), "--acoustic-scale", "1.0"]
    mono = tmp_path / "exp" / "mono"
    assert main(["gmm", "mono", *common, "--exp-dir", str(mono), "--num-iters", "5", "--realign-iters", "1,2,4",
                 "--max-gauss", "60", "--max-iter-inc", "3", "--num-sil-states", "3"]) == 0
    summary = json.loads((mono / "summary.json").read_text())
    failures = json.loads((mono / "ali_failures.json").read_text())
    assert summary["utts_aligned"] == 31 and set(failures) == {"bad", "short", "silent"}
    assert "NaN" in failures["bad"] and failures["short"].startswith("too short")
    assert failures["silent"].startswith("silent audio")
    assert summary["failure_reasons"] == {"bad features": 1, "too short": 1, "silent audio": 1}
    hist = json.loads((mono / "history.json").read_text())
    assert hist[-1]["loglike_per_frame"] > hist[0]["loglike_per_frame"]
    mtime = (mono / "final.mdl").stat().st_mtime
    assert main(["gmm", "mono", *common, "--exp-dir", str(mono)]) == 0  # done: skipped
    assert (mono / "final.mdl").stat().st_mtime == mtime

    tri = tmp_path / "exp" / "tri1"
    assert main(["gmm", "tri", *common, "--ali-dir", str(mono), "--exp-dir", str(tri), "--num-leaves", "30",
                 "--min-leaf-count", "20", "--num-iters", "3", "--realign-iters", "2", "--max-gauss", "90",
                 "--max-iter-inc", "2"]) == 0
    priors = json.loads((tri / "priors.json").read_text())
    tree = json.loads((tri / "tree.json").read_text())
    assert tree["type"] == "tree" and priors["num_pdfs"] == json.loads((tri / "summary.json").read_text())["num_pdfs"]
    assert priors["num_frames"] == sum(feats[u].shape[0] for u in list(truth) + ["oov"])
    ctm = (tri / "phones.ctm").read_text().splitlines()
    assert ctm[0].split()[:3] == ["oov", "1", "0.00"] and any(l.endswith(" SPN") for l in ctm)

    out = tmp_path / "senones" / "cuts.jsonl.gz"
    assert main(["gmm", "labels", "--cuts", str(cuts), "--ali-dir", str(tri), "--out-cuts", str(out)]) == 0
    from lhotse import load_manifest

    labelled = load_manifest(out)
    assert len(labelled) == 31  # the three bad utterances carry no labels
    for c in labelled:
        y = c.load_senone()
        assert y.shape == (c.num_frames,) and y.dtype == np.int32
        assert 0 <= y.min() and y.max() < priors["num_pdfs"]
    # Labels are kept while they are newer than the alignment, and redone once it is rebuilt
    # (a retrained triphone system must not leave the DNNs stale senone ids).
    mtime = out.stat().st_mtime
    assert main(["gmm", "labels", "--cuts", str(cuts), "--ali-dir", str(tri), "--out-cuts", str(out)]) == 0
    assert out.stat().st_mtime == mtime
    os.utime(tri / "ali.pt", (mtime + 10, mtime + 10))
    assert main(["gmm", "labels", "--cuts", str(cuts), "--ali-dir", str(tri), "--out-cuts", str(out)]) == 0
    assert out.stat().st_mtime > mtime

    rc = main(["gmm", "report", "--recipe-dir", str(tmp_path), "--model-dirs", str(mono), str(tri),
               "--command", "pytest"])
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    rows = {r["system"]: r for r in res["rows"]}
    assert set(rows) == {"gmm-mono", "gmm-tri", "gmm-pipeline"}
    assert rows["gmm-pipeline"]["seconds"] == pytest.approx(rows["gmm-mono"]["seconds"] + rows["gmm-tri"]["seconds"])
    assert abs(rows["gmm-mono"]["aligned_pct"] - 100 * 31 / 34) < 1e-6
    assert rows["gmm-tri"]["command"] == "pytest" and "gmm-tri" in (tmp_path / "RESULTS.md").read_text()
