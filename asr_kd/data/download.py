"""Download the public corpora into their official layout (skipped when the data is already there).

``asr-kd download CORPUS TARGET_DIR`` returns the directory that ``asr-kd prepare`` takes. When the
expected layout is already present in ``TARGET_DIR`` (e.g. a copy made by hand, or the shared
corpora), nothing is fetched. Machines without internet simply point ``prepare`` at a local copy.
"""
from __future__ import annotations

import logging
import shutil
import tarfile
from pathlib import Path
from typing import Sequence, Union

from lhotse.recipes import download_librispeech
from lhotse.utils import resumable_download, safe_extract

from asr_kd.utils import Pathlike

log = logging.getLogger(__name__)

URLS = {
    "yesno": "https://www.openslr.org/resources/1/waves_yesno.tar.gz",
    "fsdd": "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.tar.gz",
    "speechocean762": "https://www.openslr.org/resources/101/speechocean762.tar.gz",
}


def corpus_root(corpus: str, target_dir: Pathlike) -> Path:
    """Where the corpus lives inside ``target_dir`` once downloaded (what ``prepare`` takes)."""
    target_dir = Path(target_dir)
    return {
        "yesno": target_dir / "waves_yesno",
        "fsdd": target_dir / "free-spoken-digit-dataset",
        "speechocean762": target_dir / "speechocean762",
        "librispeech": target_dir / "LibriSpeech",
    }[corpus]


def is_present(corpus: str, root: Path) -> bool:
    if corpus == "yesno":
        return root.is_dir() and any(root.glob("*.wav"))
    if corpus == "fsdd":
        return (root / "recordings").is_dir() and any((root / "recordings").iterdir())
    if corpus == "speechocean762":
        return all((root / s / "wav.scp").is_file() for s in ("train", "test"))
    if corpus == "librispeech":
        return root.is_dir() and any(root.iterdir())
    raise ValueError(f"unknown corpus {corpus!r}")


def _fetch_and_extract(url: str, target_dir: Path, extracted: Path) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    archive = target_dir / url.rsplit("/", 1)[-1]
    resumable_download(url, filename=archive)
    tmp = target_dir / f".{extracted.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive) as tar:
        safe_extract(tar, path=tmp)
    # The archive holds one top-level directory; move it into place only once fully extracted.
    (top,) = [p for p in tmp.iterdir()]
    shutil.rmtree(extracted, ignore_errors=True)
    top.rename(extracted)
    shutil.rmtree(tmp, ignore_errors=True)


def download_corpus(corpus: str, target_dir: Pathlike,
                    librispeech_parts: Union[str, Sequence[str]] = "mini_librispeech") -> Path:
    root = corpus_root(corpus, target_dir)
    if is_present(corpus, root):
        log.info(f"{corpus}: found in {root}; not downloading")
        return root
    log.info(f"{corpus}: downloading into {target_dir}")
    if corpus == "librispeech":
        download_librispeech(target_dir, dataset_parts=librispeech_parts)
    else:
        _fetch_and_extract(URLS[corpus], Path(target_dir), root)
    if not is_present(corpus, root):
        raise RuntimeError(f"{corpus}: download finished but {root} does not hold the expected layout")
    return root


# ---------------------------------------------------------------- CLI: asr-kd download


def add_arguments(parser) -> None:
    parser.add_argument("corpus", choices=sorted(URLS) + ["librispeech"], help="which public corpus")
    parser.add_argument("target_dir", type=Path, help="where to put the corpus")
    parser.add_argument("--librispeech-parts", nargs="+", default=["mini_librispeech"],
                        help="librispeech: lhotse's dataset_parts (mini_librispeech, librispeech for all of it, "
                        "or part names: train-clean-100 dev-clean test-clean)")


def run(args) -> int:
    parts = args.librispeech_parts
    print(download_corpus(args.corpus, args.target_dir, parts[0] if len(parts) == 1 else parts))
    return 0
