"""``--nj`` for the GMM steps (issue 16, part 3): monophone and triphone training and forced
alignment in 2 jobs give the model and alignment of 1 job, bit for bit, on the real yesno corpus;
``align --job J/N`` run as array jobs through local/cmd/run.sh, then ``--merge-jobs N``, give the
outputs of ``--nj N``; local/cmd/slurm.sh submits the same command line as one array job (checked
against a stand-in sbatch)."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_kd.cli import main
from asr_kd.hmm.jobs import GmmJobs, cover, plan, tree_sum
from asr_kd.hmm.alignments import load_alignments
from asr_kd.hmm.train import GmmHmm

REPO = Path(__file__).resolve().parents[1]
BLOCK = ["--acc-block-frames", "2000"]  # yesno's 16k training frames in 9 blocks, so 2 jobs share them
MONO = ["--max-gauss", "200", "--num-iters", "6", "--realign-iters", "1,2,4", "--max-iter-inc", "4", *BLOCK]
TRI = ["--num-leaves", "40", "--min-leaf-count", "20", "--max-gauss", "300", "--num-iters", "4",
       "--realign-iters", "2", "--max-iter-inc", "3", *BLOCK]


class Num:
    """A float that sums the way GmmJobs sums statistics (``add`` in place)."""

    def __init__(self, v):
        self.v = v

    def add(self, other):
        self.v += other.v


def test_any_split_sums_the_blocks_in_the_same_order():
    rng = random.Random(0)
    vals = [rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8) for _ in range(37)]
    ref = tree_sum(0, len(vals), lambda i: Num(vals[i])).v
    for nj in (2, 3, 5, 37):
        cuts = sorted(rng.sample(range(1, len(vals)), nj - 1))
        bounds = list(zip([0] + cuts, cuts + [len(vals)]))
        known = {}
        for a, b in bounds:  # each job sums the tree nodes that tile its blocks
            for node in cover(a, b, 0, len(vals)):
                known[node] = tree_sum(*node, lambda i: Num(vals[i]))
        assert set(known) == set(n for a, b in bounds for n in cover(a, b, 0, len(vals)))
        assert tree_sum(0, len(vals), None, known).v == ref  # bit for bit


def test_plan_blocks_do_not_depend_on_nj():
    lengths = [300, 1200, 50, 800, 800, 400, 1000, 100, 700, 900]
    ref = None
    for nj in (1, 2, 3, 4, 20):
        blocks, parts = plan(lengths, nj, block_frames=1000)
        ref = ref or blocks
        assert blocks == ref == [(0, 2), (2, 5), (5, 7), (7, 10)]
        assert len(parts) == min(nj, len(blocks))
        assert parts[0][0] == 0 and parts[-1][1] == len(blocks)
        assert all(p[1] == q[0] and p[0] < p[1] for p, q in zip(parts, parts[1:]))  # tiling, none empty
    assert plan([], 4) == ([], [])
    # the parts of --job J/N: sorted utterances with features, about equal frames
    feats = {f"u{i}": np.zeros((n, 2), np.float32) for i, n in enumerate(lengths)}
    texts = {u: ["W"] for u in reversed(list(feats) + ["nofeats"])}
    parts = GmmJobs.split(feats, texts, 2, block_frames=1)
    assert [u for p in parts for u in p] == sorted(feats) and len(parts) == 2
    assert abs(sum(len(feats[u]) for u in parts[0]) - sum(len(feats[u]) for u in parts[1])) <= 1200


@pytest.fixture(scope="module")
def yesno(corpora, tmp_path_factory):
    d = tmp_path_factory.mktemp("yesno")
    assert main(["prepare", "yesno", str(corpora / "yesno" / "waves_yesno"), str(d / "manifests"),
                 "--dev-fraction", "0.1"]) == 0
    assert main(["fbank", str(d / "manifests"), str(d / "fbank"), "--corpus", "yesno", "--splits", "train", "test",
                 "--num-jobs", "1"]) == 0
    assert main(["lang", str(d / "lang"), "--vocab-cuts", str(d / "manifests" / "yesno_cuts_train.jsonl.gz")]) == 0
    return d


def _train_and_align(d, nj):
    exp = d / f"exp_nj{nj}"
    common = ["--lang-dir", str(d / "lang"), "--cuts", str(d / "fbank" / "yesno_cuts_train.jsonl.gz"), "--nj", str(nj)]
    assert main(["gmm", "mono", *common, "--exp-dir", str(exp / "mono"), *MONO]) == 0
    assert main(["gmm", "tri", *common, "--ali-dir", str(exp / "mono"), "--exp-dir", str(exp / "tri1"), *TRI]) == 0
    assert main(["gmm", "align", "--lang-dir", str(d / "lang"), "--cuts", str(d / "fbank" / "yesno_cuts_test.jsonl.gz"),
                 "--model-dir", str(exp / "tri1"), "--out-dir", str(exp / "ali_test"), "--nj", str(nj)]) == 0
    return exp


def _same_alignments(a_path, b_path):
    a, b = load_alignments(a_path), load_alignments(b_path)
    assert list(a) == list(b) and len(a) > 0
    for u in a:
        for k, v in a[u].to_arrays().items():
            assert np.array_equal(v, b[u].to_arrays()[k]), (u, k)


def _same_dirs(a, b, files=("priors.json", "phones.ctm", "ali_failures.json")):
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    _same_alignments(a / "ali.pt", b / "ali.pt")


@pytest.fixture(scope="module")
def runs(yesno):
    return yesno, _train_and_align(yesno, 1), _train_and_align(yesno, 2)


def test_two_jobs_train_and_align_as_one(runs):
    d, one, two = runs
    for system in ("mono", "tri1"):
        summary = json.loads((two / system / "summary.json").read_text())
        assert summary["nj"] == 2 and summary["peak_rss_mb_jobs"] > 0  # the jobs did run, in processes of their own
        a, b = GmmHmm.load(one / system / "final.mdl"), GmmHmm.load(two / system / "final.mdl")
        for k in ("means", "vars", "log_weights"):
            x, y = getattr(a.gmm, k), getattr(b.gmm, k)
            assert x.shape == y.shape
            torch.testing.assert_close(x, y, rtol=1e-12, atol=0.0)
            assert torch.equal(x, y), (system, k)  # not only close: the same sums in the same order
        assert a.trans.to_dict() == b.trans.to_dict() and a.ctx_dep.to_dict() == b.ctx_dep.to_dict()
        strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
        assert strip(json.loads((one / system / "history.json").read_text())) == \
            strip(json.loads((two / system / "history.json").read_text()))
        _same_dirs(one / system, two / system, ("priors.json", "phones.ctm", "ali_failures.json", "tree.json"))
    assert json.loads((two / "ali_test" / "summary.json").read_text())["nj"] == 2
    _same_dirs(one / "ali_test", two / "ali_test")


def _align_cmd(d, model, out):
    return [sys.executable, "-m", "asr_kd.cli", "gmm", "align", "--lang-dir", str(d / "lang"),
            "--cuts", str(d / "fbank" / "yesno_cuts_test.jsonl.gz"), "--model-dir", str(model), "--out-dir", str(out)]


def _fake_sbatch(bin_dir: Path) -> None:
    """A stand-in for Slurm's sbatch --array ... --wait: runs the tasks here, one after another."""
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("""#!/usr/bin/env bash
array="" out="" all="$*"
while [ $# -gt 1 ]; do
  case $1 in --array) array=$2; shift 2 ;; --output) out=$2; shift 2 ;; --wait|--parsable) shift ;;
    --*) shift 2 ;; *) break ;; esac
done
echo "$all" > "$(dirname "$1")/sbatch.args"
range=${array%%\\%*}; rc=0
for ((i = ${range%-*}; i <= ${range#*-}; i++)); do
  SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_JOB_ID=42 bash "$1" > "${out//%a/$i}" 2>&1 || rc=1
done
echo 42
exit $rc
""")
    (bin_dir / "sbatch").chmod(0o755)


def test_array_jobs_and_merge_write_what_nj_writes(runs, tmp_path):
    d, one, two = runs
    out = tmp_path / "ali_test"
    cmd = [str(REPO / "local" / "cmd" / "run.sh"), "JOB=1:2", str(out / "log" / "align.JOB.log"),
           *_align_cmd(d, one / "tri1", out), "--job", "JOB/2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + "".join(p.read_text() for p in (out / "log").glob("*.log"))
    log = (out / "log" / "align.2.log").read_text()
    assert "--job 2/2" in log.splitlines()[0] and "# Ended (code 0)" in log
    assert sorted(p.name for p in (out / "split2").glob("ali.*.pt")) == ["ali.1.pt", "ali.2.pt"]
    assert main(["gmm", "align", *_align_cmd(d, one / "tri1", out)[5:], "--merge-jobs", "2"]) == 0
    _same_dirs(two / "ali_test", out)
    assert json.loads((out / "summary.json").read_text())["nj"] == 2


def test_slurm_sh_submits_one_array_job(tmp_path):
    _fake_sbatch(tmp_path / "bin")
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    slurm = str(REPO / "local" / "cmd" / "slurm.sh")
    log = tmp_path / "log" / "work.JOB.log"
    proc = subprocess.run([slurm, "--mem", "2G", "--max-jobs-run", "2", "JOB=1:3", str(log),
                           "bash", "-c", "echo task JOB of $SLURM_ARRAY_TASK_ID > %s/out.JOB" % tmp_path],
                          env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [(tmp_path / f"out.{i}").read_text() for i in (1, 2, 3)] == [f"task {i} of {i}\n" for i in (1, 2, 3)]
    assert "# Ended (code 0)" in (tmp_path / "log" / "work.3.log").read_text()
    args = (tmp_path / "log" / "q" / "sbatch.args").read_text().split()
    assert args[args.index("--array") + 1] == "1-3%2" and args[args.index("--mem") + 1] == "2G"
    proc = subprocess.run([slurm, "JOB=1:2", str(log), "bash", "-c", "[ JOB != 2 ]"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "job 2 failed (code 1)" in proc.stderr and "1 / 2 failed" in proc.stderr


def test_merge_names_a_missing_or_stale_part(runs, tmp_path, capsys):
    d, one, _ = runs
    out = tmp_path / "ali"
    args = _align_cmd(d, one / "tri1", out)[5:]
    assert main(["gmm", "align", *args, "--job", "1/2"]) == 0
    assert main(["gmm", "align", *args, "--merge-jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert "split2/ali.2.pt not found: run part 2 of 2 first" in err and "--job 2/2" in err
    assert main(["gmm", "align", *args, "--job", "2/2"]) == 0
    os.utime(out / "split2" / "ali.1.pt", (1, 1))  # older than the model
    assert main(["gmm", "align", *args, "--merge-jobs", "2"]) == 1
    assert "split2/ali.1.pt is older than" in capsys.readouterr().err
    assert main(["gmm", "align", *args, "--job", "1/2", "--force"]) == 0
    assert main(["gmm", "align", *args, "--merge-jobs", "2", "--max-utts", "20"]) == 1
    assert "the 2 parts in" in capsys.readouterr().err
    assert main(["gmm", "align", *args, "--job", "3/2"]) == 1
    assert "J must be between 1 and N" in capsys.readouterr().err


def test_run_sh_reports_failed_jobs(tmp_path):
    run = REPO / "local" / "cmd" / "run.sh"
    proc = subprocess.run([str(run), "--max-jobs-run", "2", "JOB=1:3", str(tmp_path / "x.JOB.log"),
                           "bash", "-c", "echo job JOB; [ JOB != 2 ]"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "job 2 failed (code 1)" in proc.stderr and "1 / 3 failed" in proc.stderr
    assert (tmp_path / "x.3.log").read_text().splitlines()[2] == "job 3"
    proc = subprocess.run([str(run), "JOB=1:2", str(tmp_path / "same.log"), "true"], capture_output=True, text=True)
    assert proc.returncode == 2 and "does not contain JOB" in proc.stderr


def test_models_and_statistics_cross_to_jobs_by_value():
    """torch tensors pickled by multiprocessing go to shared memory, and two job queues pickling
    the same GMM at once crashed the parent (SIGSEGV in torch's reduce_storage): they cross as numpy."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    from asr_kd.hmm.gmm import DiagGmmSet

    gmm = DiagGmmSet.single_gaussian(torch.zeros(3), torch.ones(3), 4)
    accs = gmm.new_accs()
    back = pickle.loads(bytes(ForkingPickler.dumps(gmm)))
    assert torch.equal(back.means, gmm.means) and torch.equal(back.log_weights, gmm.log_weights)
    assert pickle.loads(bytes(ForkingPickler.dumps(accs))).x2.shape == accs.x2.shape
    assert not gmm.means.is_shared() and not accs.occ.is_shared()
