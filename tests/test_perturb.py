"""Speed perturbation: copies that are new utterances and new speakers, audio resampled on load."""
import numpy as np
import soundfile as sf
from lhotse import CutSet, Recording, SupervisionSegment, load_manifest

from asr_kd.cli import main
from asr_kd.data.perturb import speed_perturb


def _cuts(tmp_path, n=2, sr=8000):
    cuts = []
    for i in range(n):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, np.sin(np.arange(sr) * 0.05 * (i + 1)).astype(np.float32), sr)
        rec = Recording.from_file(path, recording_id=f"r{i}")
        sup = SupervisionSegment(f"s{i}", f"r{i}", 0.0, rec.duration, text="YES NO", speaker=f"spk{i % 2}")
        cuts.append(rec.to_cut().with_id(f"c{i}"))
        cuts[-1].supervisions = [sup]
    return CutSet.from_cuts(cuts)


def test_speed_perturb_renames_speakers_and_changes_length(tmp_path):
    cuts = _cuts(tmp_path)
    out = speed_perturb(cuts, [0.9, 1.0, 1.1])
    assert len(out) == 6
    by_id = {c.id: c for c in out}
    slow, orig, fast = by_id["sp0.9-c0"], by_id["c0"], by_id["sp1.1-c0"]
    assert orig.supervisions[0].speaker == "spk0" and slow.supervisions[0].speaker == "sp0.9-spk0"
    assert slow.recording.id == "sp0.9-r0" and slow.supervisions[0].text == "YES NO"
    assert slow.load_audio().shape[1] > orig.load_audio().shape[1] > fast.load_audio().shape[1]
    assert abs(slow.duration - orig.duration / 0.9) < 1e-3
    assert len({c.recording.id for c in out}) == 6


def test_perturb_command_writes_a_manifest(tmp_path):
    src, dst = tmp_path / "cuts.jsonl.gz", tmp_path / "cuts_sp.jsonl.gz"
    _cuts(tmp_path).to_file(src)
    assert main(["perturb", str(src), str(dst), "--factors", "1.0", "1.1"]) == 0
    out = load_manifest(dst)
    assert sorted(c.id for c in out) == ["c0", "c1", "sp1.1-c0", "sp1.1-c1"]
    assert out["sp1.1-c1"].load_audio().shape[1] < out["c1"].load_audio().shape[1]
