"""Frames that stream from disk: memory per process bounded by a setting, not by the corpus.

:class:`FrameSet` holds every frame of a set in memory (176 bytes a frame: ~6.4 GB per process
for 100 h of LibriSpeech, ~61 GB for 960 h). Here the CMVN-normalized frames are written once into
*frame shards* (:func:`write_frame_shards`), plain numpy files a person can ``np.load``::

    DIR/manifest.json              format, feature dim and dtype, source manifest, one entry a shard
    DIR/shard-000000.feats.npy     [N, D] float32 (or float16) features, utterances one after another
    DIR/shard-000000.labels.npy    [N] int32 senone labels
    DIR/shard-000000.lengths.npy   [U] int64 frames of each utterance, in order
    DIR/shard-000000.utt2spk       "cut_id speaker" per utterance, in order (Kaldi's utt2spk)

and :class:`StreamFrameSet` reads them back a *piece* at a time with ``os.preadv`` straight into
a fixed *shuffle buffer* of ``buffer_frames`` frames (no memory map, so no file page stays counted
in the process's memory). A piece is a whole utterance, or with ``chunk_frames`` C a run of C
frames of one (read with the context frames its windows need, as Kaldi's nnet3 examples are), so
that a buffer holds frames of ~buffer_frames / C utterances rather than of buffer_frames / (mean
utterance length). Each epoch (seeded by seed and epoch, so a resumed run sees the order an
uninterrupted one would):

1. the shards are permuted and taken in windows of ``shards_per_window`` (0: all, one window);
2. the pieces of a window are permuted; rank r of w takes every w-th of them, and DataLoader
   worker k of n every n-th of the rank's (disjoint, together the whole epoch);
3. pieces fill the buffer until it holds ``buffer_frames`` frames; its frames (less the pieces'
   context frames) are then shuffled and spliced into batches exactly as :meth:`FrameSet.splice`
   does (context from the same utterance, edges replicated), and the buffer refills.

Every rank takes the same number of frames (the fewest any rank has this epoch, which drops at
most a few utterances' frames), in batches of exactly ``batch_size``, so DDP ranks step together.
Memory per process: the buffer (``buffer_frames`` x (D x 4 + 16) bytes plus one piece) and the
index (cut ids and lengths, and 24 bytes a piece), whatever the corpus's size.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from lhotse import load_manifest_lazy
from tqdm import tqdm

from asr_kd.data.features import Cmvn
from asr_kd.nnet.data import LABEL_FIELD, FrameSet
from asr_kd.utils import Pathlike, UserError, atomic_path, exclusive_lock, read_json, write_json, write_text

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "asr-kd frame shards 1"
SHARD_FILES = ("feats.npy", "labels.npy", "lengths.npy", "utt2spk")


def shard_name(i: int) -> str:
    return f"shard-{i:06d}"


def labelled_frames(cuts, cmvn: Cmvn, label_field: str = LABEL_FIELD, report: Optional[dict] = None,
                    progress: bool = True) -> Iterator[Tuple[str, str, np.ndarray, np.ndarray]]:
    """(cut id, speaker, CMVN-normalized features [T, D], senone labels [T]) of each usable cut;
    cuts are skipped (and counted in ``report``) as :meth:`FrameSet.from_cuts` skips them."""
    report = {} if report is None else report
    for key in ("no_labels", "length_mismatch", "non_finite"):
        report.setdefault(key, 0)
    for cut in tqdm(cuts, desc="writing frame shards", unit="cut", disable=not progress):
        x = cmvn.apply_to_cut(cut)
        if not np.isfinite(x).all():
            report["non_finite"] += 1
            log.warning(f"cut {cut.id}: non-finite features; skipped")
            continue
        if not cut.has_custom(label_field):
            report["no_labels"] += 1
            continue
        y = np.asarray(cut.load_custom(label_field)).astype(np.int64).reshape(-1)
        if y.shape[0] != x.shape[0]:
            report["length_mismatch"] += 1
            log.warning(f"cut {cut.id}: {x.shape[0]} feature frames but {y.shape[0]} senone labels; skipped")
            continue
        yield cut.id, cut.supervisions[0].speaker if cut.supervisions else cut.id, x, y
    if report["no_labels"]:
        log.warning(f"{report['no_labels']} cuts have no '{label_field}' labels (not aligned); skipped")


def write_frame_shards(
    utterances,
    out_dir: Pathlike,
    shard_frames: int = 1_000_000,
    dtype: str = "float32",
    source: Optional[str] = None,
    report: Optional[dict] = None,
) -> dict:
    """Write ``utterances`` ((cut id, speaker, features [T, D], labels [T]), e.g. from
    :func:`labelled_frames`) as shards of about ``shard_frames`` frames in ``out_dir``; returns
    the manifest (also ``out_dir/manifest.json``, written last: a directory without it is
    unfinished). Memory: one shard's frames."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"frame shards are float32 or float16, not {dtype!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / MANIFEST).exists():
        (out_dir / MANIFEST).unlink()  # the old shards are no longer a finished set
    shards: List[dict] = []
    feats: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    utts: List[Tuple[str, str]] = []
    feat_dim, max_label, frames, pending = None, -1, 0, 0

    def flush():
        name = shard_name(len(shards))
        x = np.concatenate(feats).astype(dtype, copy=False)
        y = np.concatenate(labels).astype(np.int32)
        for suffix, array in (("feats.npy", x), ("labels.npy", y),
                              ("lengths.npy", np.array([len(a) for a in labels], dtype=np.int64))):
            with atomic_path(out_dir / f"{name}.{suffix}") as tmp:
                np.save(tmp, array)
        write_text(out_dir / f"{name}.utt2spk", "".join(f"{c} {s}\n" for c, s in utts))
        shards.append({"name": name, "frames": int(x.shape[0]), "utterances": len(utts)})
        feats.clear(), labels.clear(), utts.clear()

    for cut_id, speaker, x, y in utterances:
        x, y = np.asarray(x, dtype=dtype), np.asarray(y).reshape(-1)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{cut_id}: {x.shape[0]} feature frames but {y.shape[0]} labels")
        feat_dim = x.shape[1]
        max_label = max(max_label, int(y.max()))
        feats.append(x)
        labels.append(y)
        utts.append((cut_id, speaker))
        pending += len(y)
        frames += len(y)
        if pending >= shard_frames:
            flush()
            pending = 0
    if feats:
        flush()
    if not shards:
        raise ValueError(f"no usable cuts for {out_dir} (skipped: {report})")
    manifest = {"format": FORMAT, "source": source, "feat_dim": int(feat_dim), "dtype": dtype,
                "max_label": max_label, "frames": frames, "utterances": sum(s["utterances"] for s in shards),
                "skipped": report or {}, "shards": shards}
    keep = {f"{s['name']}.{suffix}" for s in shards for suffix in SHARD_FILES}
    for old in out_dir.glob("shard-*"):  # shards of an earlier, larger set
        if old.name not in keep:
            old.unlink()
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def _npy_data_offset(path: Path) -> Tuple[int, tuple, np.dtype]:
    """(byte offset of the data, shape, dtype) of a C-ordered .npy file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran:
            raise UserError(f"{path}: a Fortran-ordered array; rewrite the frame shards")
        return f.tell(), shape, dtype


class FrameShards:
    """The index of a shard directory: each utterance's shard, offset, length, cut id and speaker.
    Opening checks that every shard file is there and long enough (a missing or truncated one is
    one :class:`UserError` naming it)."""

    def __init__(self, shard_dir: Pathlike):
        self.dir = Path(shard_dir)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise UserError(f"{path} not found: the frame shards in {self.dir} were not written (or not finished); "
                            "write them again (asr-kd nnet train --stream-frames writes them from --cuts)")
        self.manifest = m = read_json(path)
        if m.get("format") != FORMAT:
            raise UserError(f"{path}: not a frame-shard manifest ({m.get('format')!r}); write the shards again")
        self.feat_dim, self.dtype, self.max_label = int(m["feat_dim"]), np.dtype(m["dtype"]), int(m["max_label"])
        self.source = m.get("source")
        self.feat_files: List[Tuple[Path, int]] = []  # (path, data offset) per shard
        self.label_files: List[Tuple[Path, int]] = []
        lengths, shard_of, cut_ids, speakers = [], [], [], []
        for i, s in enumerate(m["shards"]):
            files = {suffix: self.dir / f"{s['name']}.{suffix}" for suffix in SHARD_FILES}
            for f in files.values():
                if not f.is_file():
                    raise UserError(f"{f} not found: frame shard missing; write the shards in {self.dir} again")
            for key, dt, width, out in (("feats.npy", self.dtype, self.feat_dim, self.feat_files),
                                        ("labels.npy", np.dtype(np.int32), 1, self.label_files)):
                offset, shape, file_dtype = _npy_data_offset(files[key])
                want = (s["frames"], width) if key == "feats.npy" else (s["frames"],)
                if tuple(shape) != want or file_dtype != dt:
                    raise UserError(f"{files[key]}: {shape} {file_dtype}, the manifest says {want} {dt}; "
                                    f"write the shards in {self.dir} again")
                if files[key].stat().st_size < offset + int(np.prod(want)) * dt.itemsize:
                    raise UserError(f"{files[key]}: truncated; write the shards in {self.dir} again")
                out.append((files[key], offset))
            n = np.load(files["lengths.npy"])
            pairs = files["utt2spk"].read_text(encoding="utf-8").split("\n")[: len(n)]
            if len(n) != s["utterances"] or int(n.sum()) != s["frames"] or len(pairs) != len(n):
                raise UserError(f"{files['lengths.npy']} or {files['utt2spk']} disagrees with {path}; "
                                f"write the shards in {self.dir} again")
            lengths.append(n)
            shard_of.append(np.full(len(n), i, dtype=np.int64))
            for line in pairs:
                c, _, spk = line.partition(" ")
                cut_ids.append(c)
                speakers.append(spk)
        self.lengths = np.concatenate(lengths)
        self.shard_of_utt = np.concatenate(shard_of)
        first = np.concatenate([np.cumsum(n) - n for n in lengths])  # first frame within its shard
        self.offset_in_shard = first
        self.cut_ids, self.speakers = cut_ids, speakers
        self.num_shards = len(m["shards"])

    def __len__(self) -> int:
        return int(self.lengths.sum())

    def reader(self) -> "_ShardReader":
        return _ShardReader(self)

    def frameset(self, utterances: Sequence[int]) -> FrameSet:
        """Those utterances (by index) read into memory as a :class:`FrameSet` (e.g. the dev set)."""
        utterances = list(utterances)
        lengths = torch.from_numpy(self.lengths[utterances].copy())
        feats = torch.empty(int(lengths.sum()), self.feat_dim)
        labels = torch.empty(int(lengths.sum()), dtype=torch.int64)
        ends = torch.cumsum(lengths, 0)
        with self.reader() as r:
            for u, e, n in zip(utterances, ends.tolist(), lengths.tolist()):
                r.read(u, feats[e - n : e], labels[e - n : e])
        return FrameSet(feats, labels, torch.repeat_interleave(torch.arange(len(utterances)), lengths),
                        ends - lengths, ends, [self.cut_ids[u] for u in utterances],
                        [self.speakers[u] for u in utterances])


class _ShardReader:
    """Reads utterances with ``os.preadv`` into caller-given tensors; file descriptors opened on
    first use (so after a DataLoader worker forks) and closed with the reader."""

    def __init__(self, shards: FrameShards):
        self.s = shards
        self.fds = {}
        self.staging = np.empty(0, dtype=shards.dtype)
        self.label_staging = np.empty(0, dtype=np.int32)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def _pread(self, path: Path, offset: int, out: np.ndarray) -> None:
        fd = self.fds.get(path)
        if fd is None:
            try:
                fd = self.fds[path] = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise UserError(f"{path}: cannot open frame shard ({e.strerror})") from e
        if os.preadv(fd, [out], offset) != out.nbytes:
            raise UserError(f"{path}: truncated; write the shards in {self.s.dir} again")

    def read(self, u: int, feats: torch.Tensor, labels: torch.Tensor, start: int = 0) -> None:
        """Frames ``start`` .. ``start + len(feats)`` of utterance ``u``: features into ``feats`` [L, D]
        (float32) and labels into ``labels`` [L] (int64)."""
        s, n = self.s, int(feats.shape[0])
        if start < 0 or start + n > int(s.lengths[u]):
            raise ValueError(f"frames {start}..{start + n} of utterance {u}, which has {int(s.lengths[u])}")
        shard, first = int(s.shard_of_utt[u]), int(s.offset_in_shard[u]) + start
        path, offset = s.feat_files[shard]
        start = offset + first * s.feat_dim * s.dtype.itemsize
        if s.dtype == np.float32:
            self._pread(path, start, feats.numpy())
        else:
            if self.staging.size < n * s.feat_dim:
                self.staging = np.empty(n * s.feat_dim, dtype=s.dtype)
            out = self.staging[: n * s.feat_dim]
            self._pread(path, start, out)
            feats.numpy()[:] = out.reshape(n, s.feat_dim)
        if self.label_staging.size < n:
            self.label_staging = np.empty(n, dtype=np.int32)
        path, offset = s.label_files[shard]
        self._pread(path, offset + first * 4, self.label_staging[:n])
        labels.numpy()[:] = self.label_staging[:n]


@dataclass
class StreamFrameSet:
    """Training frames streamed from :class:`FrameShards` (some of its utterances) through a
    shuffle buffer of ``buffer_frames``; :meth:`epoch_batches` gives one epoch's batches.
    ``chunk_frames`` > 0 makes pieces of that many frames of each utterance (read with their
    context) the unit of the epoch's permutation instead of whole utterances, so that one buffer
    holds frames of many more utterances."""

    shards: FrameShards
    utterances: Optional[np.ndarray] = None  # indices into shards (None: all)
    buffer_frames: int = 2_000_000
    shards_per_window: int = 0  # 0: all shards in one window (one permutation of all utterances)
    num_workers: int = 0  # DataLoader worker processes reading ahead (0: in this process)
    chunk_frames: int = 0  # 0: whole utterances are the pieces

    def __post_init__(self):
        if self.utterances is None:
            self.utterances = np.arange(len(self.shards.lengths))
        self.utterances = np.asarray(self.utterances, dtype=np.int64)
        if self.buffer_frames < 1:
            raise ValueError(f"buffer_frames must be positive, not {self.buffer_frames}")
        if self.chunk_frames < 0:
            raise ValueError(f"chunk_frames must be 0 (whole utterances) or positive, not {self.chunk_frames}")
        self.pieces = self._pieces()

    def _pieces(self) -> np.ndarray:
        """[P, 3] (utterance, first frame, end frame) of every piece of the set, in order."""
        lengths = self.shards.lengths[self.utterances]
        if not self.chunk_frames:
            return np.stack([self.utterances, np.zeros_like(lengths), lengths], 1)
        per_utt = -(-lengths // self.chunk_frames)
        k = np.arange(int(per_utt.sum())) - np.repeat(np.cumsum(per_utt) - per_utt, per_utt)
        start = k * self.chunk_frames
        return np.stack([np.repeat(self.utterances, per_utt), start,
                         np.minimum(start + self.chunk_frames, np.repeat(lengths, per_utt))], 1)

    def __len__(self) -> int:
        return int(self.shards.lengths[self.utterances].sum())

    @property
    def feat_dim(self) -> int:
        return self.shards.feat_dim

    def epoch_pieces(self, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Rank ``rank``'s pieces [P, 3] of the epoch, in the order it reads them (steps 1-2 above)."""
        rng = np.random.default_rng([seed, epoch])
        mine = []
        k = self.shards_per_window or self.shards.num_shards
        order = rng.permutation(self.shards.num_shards)
        shard_of = self.shards.shard_of_utt[self.pieces[:, 0]]
        for w in range(0, len(order), k):
            window = self.pieces[np.isin(shard_of, order[w : w + k])]
            mine.append(window[rng.permutation(len(window))][rank::world_size])
        return np.concatenate(mine)

    def epoch_utterances(self, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """The utterance of each of rank ``rank``'s pieces of the epoch, in order (whole utterances
        when ``chunk_frames`` is 0)."""
        return self.epoch_pieces(epoch, seed, rank, world_size)[:, 0]

    def frames_per_rank(self, epoch: int, seed: int, world_size: int = 1) -> int:
        """Frames every rank trains on this epoch: the fewest any rank has."""
        return min(int(np.diff(self.epoch_pieces(epoch, seed, r, world_size)[:, 1:], axis=1).sum())
                   for r in range(world_size))

    def epoch_batches(self, epoch: int, batch_size: int, seed: int, left: int, right: int, rank: int = 0,
                      world_size: int = 1) -> Tuple[Iterator[Tuple[torch.Tensor, torch.Tensor]], int]:
        """(iterator of (spliced inputs [B, (left + 1 + right) D], labels [B]), number of batches):
        ``frames_per_rank`` frames in batches of ``batch_size`` (the last one may be smaller)."""
        total = self.frames_per_rank(epoch, seed, world_size)
        stream = _EpochStream(self, epoch, seed, rank, world_size, batch_size, left, right)
        if self.num_workers > 0:
            source = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                                                      generator=torch.Generator().manual_seed(seed)))
        else:
            source = iter(stream)
        return _exact_batches(source, batch_size, total), math.ceil(total / batch_size)


class _EpochStream(torch.utils.data.IterableDataset):
    """One epoch of one rank: each DataLoader worker reads its share of the rank's pieces."""

    def __init__(self, fs: StreamFrameSet, epoch, seed, rank, world_size, batch_size, left, right):
        super().__init__()
        self.fs, self.epoch, self.seed, self.rank, self.world = fs, epoch, seed, rank, world_size
        self.batch_size, self.left, self.right = batch_size, left, right

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        fs = self.fs
        pieces = fs.epoch_pieces(self.epoch, self.seed, self.rank, self.world)[worker::workers]
        g = torch.Generator().manual_seed((self.seed * 100003 + self.epoch) * 1009 + self.rank * 31 + worker)
        lengths = fs.shards.lengths
        longest = fs.chunk_frames + self.left + self.right if fs.chunk_frames else int(lengths.max(initial=0))
        capacity = fs.buffer_frames + longest
        feats = torch.empty(capacity, fs.feat_dim)
        labels = torch.empty(capacity, dtype=torch.int64)
        with fs.shards.reader() as reader:
            n, bounds, core = 0, [], []
            for u, a, b in pieces.tolist():
                # a piece is read with its context frames (from the same utterance), which are
                # spliced into its windows but not trained on
                lo, hi = max(0, a - self.left), min(int(lengths[u]), b + self.right)
                reader.read(u, feats[n : n + hi - lo], labels[n : n + hi - lo], start=lo)
                bounds.append(n)
                core.append((n + a - lo, n + b - lo))
                n += hi - lo
                if n >= fs.buffer_frames:
                    yield from self._shuffled(feats, labels, bounds, core, n, g)
                    n, bounds, core = 0, [], []
            if n:
                yield from self._shuffled(feats, labels, bounds, core, n, g)

    def _shuffled(self, feats, labels, bounds, core, n, g):
        """The buffer's first ``n`` frames (pieces starting at ``bounds``): the frames of the pieces'
        ``core`` ranges, shuffled and spliced."""
        starts = torch.tensor(bounds)
        ends = torch.cat([starts[1:], torch.tensor([n])])
        buf = FrameSet(feats[:n], labels[:n], torch.repeat_interleave(torch.arange(len(bounds)), ends - starts),
                       starts, ends, [], [])
        trained = torch.from_numpy(np.concatenate([np.arange(a, b) for a, b in core]))
        order = trained[torch.randperm(len(trained), generator=g)]
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield buf.splice(idx, self.left, self.right), buf.labels[idx]


def _exact_batches(source, batch_size: int, total: int):
    """Batches of exactly ``batch_size`` rows (the last one smaller) from ``source``'s pieces, ``total`` rows in all."""
    xs, ys, have, given = [], [], 0, 0
    for x, y in source:
        xs.append(x)
        ys.append(y)
        have += len(y)
        while have >= batch_size or (given + have >= total and have):
            x_all, y_all = (torch.cat(xs), torch.cat(ys)) if len(xs) > 1 else (xs[0], ys[0])
            take = min(batch_size, total - given)
            yield x_all[:take], y_all[:take]
            given += take
            if given >= total:
                return
            xs, ys, have = [x_all[take:]], [y_all[take:]], len(y_all) - take
    if given < total:
        raise RuntimeError(f"the frame stream ended after {given} of {total} frames")


def open_frame_shards(cuts_path: Path, shard_dir: Path, cmvn_of, shard_frames: int = 1_000_000,
                      dtype: str = "float32", progress: bool = True) -> FrameShards:
    """The shards of ``cuts_path`` in ``shard_dir``, written first when missing, older than the
    manifest or made from another one. ``cmvn_of(cuts)`` gives the :class:`Cmvn` to apply.
    Processes that open the same directory at once (teachers trained side by side) take turns
    (a lock beside it): the first writes the shards, the others then read them."""
    shard_dir = Path(shard_dir)
    with exclusive_lock(shard_dir.parent / f".{shard_dir.name}.lock"):
        return _open_frame_shards(cuts_path, shard_dir, cmvn_of, shard_frames, dtype, progress)


def _open_frame_shards(cuts_path: Path, shard_dir: Path, cmvn_of, shard_frames: int, dtype: str,
                       progress: bool) -> FrameShards:
    source = str(Path(cuts_path).resolve())
    manifest = shard_dir / MANIFEST
    if manifest.is_file() and manifest.stat().st_mtime >= Path(cuts_path).stat().st_mtime:
        shards = FrameShards(shard_dir)
        if shards.source == source:
            return shards
        log.info(f"{shard_dir} holds the frames of {shards.source}, not {source}: rewriting it")
    cuts = load_manifest_lazy(cuts_path)  # lazily: the manifest of a big corpus is not held
    report = {}
    m = write_frame_shards(labelled_frames(cuts, cmvn_of(cuts), report=report, progress=progress), shard_dir,
                           shard_frames, dtype, source=source, report=report)
    log.info(f"{cuts_path}: {m['utterances']} cuts, {m['frames']} frames in {len(m['shards'])} shards in {shard_dir}")
    return FrameShards(shard_dir)
