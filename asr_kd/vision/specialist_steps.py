"""The CIFAR-100 generalist + specialists recipe (paper sections 5, 6.1) as functions, one per step.

Every step takes a :class:`SpecialistsConfig` (all the recipe's settings and their defaults; the
``asr-kd specialists`` flags are made from its fields). Each is resumable: it skips work whose
outputs exist unless ``config.force``; outputs are written atomically; numbers go to
``RESULTS.md`` / ``results.json`` in ``config.results_dir`` through
:func:`asr_kd.results.update_results` (table names extended by ``config.table_suffix``; their
notes, with the paper's numbers, are in ``recipes/specialists/paper.json``).

- :func:`prepare`: the official ``cifar-100-python`` layout in ``data_dir`` (from the shared copy
  or a download).
- :func:`generalist`: train the CNN on all 100 classes (a class-stratified validation split held
  out); save its logits on train / val / test.
- :func:`cluster`: covariance of the generalist's predicted probabilities on the training set,
  on-line K-means over its columns, comparison with the 20 superclasses, example clusters.
- :func:`specialists` (``config.variant`` ``dustbin`` or ``full-soft``): one specialist per
  cluster (:func:`train_one_specialist`), initialised from the generalist, trained on batches half
  special / half other; ``dustbin`` has ``|S|+1`` outputs and its dustbin logit corrected for the
  oversampling afterwards; ``full-soft`` (section 6.1) keeps the full softmax and learns hard
  targets among its special classes plus the generalist's soft targets among the others.
  ``config.jobs > 1`` trains several at once in processes.
- :func:`combine`: the KL combination of the generalist and the active dustbin specialists;
  Table 3 (accuracy, conditional accuracy) and Table 4 (change by number of specialists covering
  the class).
- :func:`overfit`: section 6.1's comparison: train vs test accuracy on the special classes.
- :func:`run_step`: one step by name.

``command`` (written in each row) defaults to this process's command line.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import multiprocessing
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from asr_kd.config import argv_command, option, quick_values
from asr_kd.distill import HARD_WEIGHT, tempered_softmax
from asr_kd.results import update_results
from asr_kd.utils import atomic_path, read_json, seed_everything, setup_logging, write_json
from asr_kd.vision.cifar import (
    Normalize, TrainTransform, fine_to_coarse, load_cifar100, load_meta, official_dir, prepare_cifar100,
    train_val_split,
)
from asr_kd.vision.cnn import CifarCNN, make_specialist
from asr_kd.vision.recipe import paper_note
from asr_kd.vision.specialists import (
    active_specialists, adjusted_rand_index, cluster_classes, cluster_purity, combine_kl, correct_dustbin_bias,
    dustbin_labels, oversampling_log_factor, prediction_covariance, special_hard_soft_targets, within_covariance,
)
from asr_kd.vision.train import DTYPES, TrainConfig, predict_logits, resolve_dtype, train_classifier

log = logging.getLogger(__name__)

STEPS = ("prepare", "generalist", "cluster", "specialists", "combine", "overfit")
VARIANTS = ("dustbin", "full-soft")
NUM_CLASSES = 100
GENERALIST_TABLE = "Generalist"
CLUSTERS_TABLE = "Clusters vs superclasses"
EXAMPLES_TABLE = "Example clusters (Table 2)"
TRAINING_TABLE = "Specialist training"
TABLE3 = "Table 3: generalist + specialists"
TABLE3_COLUMNS = ["system", "set", "accuracy", "conditional_accuracy", "specialists", "top_n", "n_chosen_on_dev",
                  "images", "conditional_images", "dev_accuracy", "wall_s"]
TABLE4 = "Table 4: change by number of specialists covering the class"
OVERFIT_TABLE = "Section 6.1: specialists overfitting"
OVERFIT_COLUMNS = ["system", "set", "special_accuracy", "train_minus_test", "special_nll", "other_classes_accuracy",
                   "images", "wall_s"]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


DATA, TRAIN, CLUSTERS, SPECIALISTS, INFERENCE = "data and output", "training", "clusters", "specialists", "inference"


@dataclasses.dataclass(frozen=True)
class SpecialistsConfig:
    """The specialists recipe's settings; the defaults are the full run's (:meth:`quick`: minutes)."""

    data_dir: Path = option(Path("data"), "holds (or receives) cifar-100-python/", group=DATA)
    corpus_dir: Optional[Path] = option(None, "the shared WebP copy (corpora/cifar100) to convert from", group=DATA)
    no_download: bool = option(False, "prepare: never download", group=DATA)
    exp_dir: Path = option(Path("exp"), "models, logits and clusters", group=DATA)
    results_dir: Path = option(Path("."), "where RESULTS.md / results.json are written", group=DATA)
    max_train: int = option(0, "use the first N training images (0 = all)", group=DATA, quick=3000)
    max_test: int = option(0, "use the first N test images (0 = all)", group=DATA, quick=1000)
    val_per_class: int = option(50, "training images per class held out for validation", group=DATA, quick=5)
    force: bool = option(False, "redo work whose outputs exist", group=DATA)
    table_suffix: str = option("", "appended to the names of the RESULTS tables written (for extra experiments)",
                               group=DATA)
    device: str = option(default_factory=default_device, help="torch device", group=TRAIN)
    dtype: str = option(
        "auto", "auto: bf16 autocast where the hardware has fast bf16 (CUDA, AVX512-BF16/AMX CPUs), else fp32 "
        "(emulated bf16 convolutions were ~20x slower than fp32 on this AVX2 CPU)", choices=DTYPES, group=TRAIN)
    threads: int = option(0, "torch CPU threads (0 = torch's default)", group=TRAIN)
    seed: int = option(0, "seed of the split, the nets and the clusterings", group=TRAIN)
    width: int = option(16, "CNN width (channels of the first conv)", group=TRAIN, quick=8)
    dropout: float = option(0.2, "dropout before the CNN's output layer", group=TRAIN)
    epochs: int = option(10, "generalist epochs", group=TRAIN, quick=2)
    batch_size: int = option(128, "batch size (generalist and specialists)", group=TRAIN, quick=64)
    lr: float = option(0.05, "generalist peak learning rate", group=TRAIN)
    weight_decay: float = option(5e-4, "weight decay (generalist and specialists)", group=TRAIN)
    num_clusters: int = option(10, "K of each K-means run", group=CLUSTERS, quick=8)
    kmeans_runs: int = option(2, "K-means runs (seeds); their clusters together are the specialists, so a class "
                                 "is covered by up to this many", group=CLUSTERS, quick=2)
    min_cluster_size: int = option(2, "drop clusters smaller than this", group=CLUSTERS)
    max_cluster_size: int = option(25, "drop clusters larger than this (K-means can lump many poorly separated "
                                       "classes together; 0 = no limit)", group=CLUSTERS)
    max_specialists: int = option(0, "keep the N most confused clusters (highest within-cluster covariance; "
                                     "0 = all)", group=CLUSTERS, quick=0)
    raw_columns: bool = option(False, "cluster the raw covariance columns instead of unit-length ones",
                               group=CLUSTERS)
    variant: str = option("dustbin", "kind of specialists the specialists step trains", choices=VARIANTS,
                          group=SPECIALISTS)
    spec_epochs: int = option(3, "passes over each specialist's special subset", group=SPECIALISTS, quick=1)
    spec_lr: float = option(0.02, "specialists' peak learning rate", group=SPECIALISTS)
    temperature: float = option(2.0, "full-soft: temperature of the soft targets", group=SPECIALISTS)
    hard_weight: float = option(HARD_WEIGHT, "full-soft: weight of the hard-label term", group=SPECIALISTS)
    jobs: int = option(1, "specialists trained at once (processes)", group=SPECIALISTS)
    top_n: int = option(1, "generalist's top-n classes that activate specialists (paper: 1)", group=INFERENCE)
    top_n_candidates: Tuple[int, ...] = option((1, 2, 3), "also choose n on the validation split among these",
                                               group=INFERENCE)
    kl_steps: int = option(300, "gradient steps on z", group=INFERENCE, quick=100)
    kl_lr: float = option(0.3, "step size of the gradient steps on z", group=INFERENCE)

    @classmethod
    def quick(cls, **overrides) -> "SpecialistsConfig":
        """The tiny settings of ``--quick`` (minutes on a CPU); ``overrides`` win."""
        return cls(**{**quick_values(cls), **overrides})

    def table(self, name: str) -> str:
        """The RESULTS table ``name`` as this config writes it (``table_suffix`` appended)."""
        return name + self.table_suffix


# ----------------------------------------------------------------------------- data and files


def load_data(cfg: SpecialistsConfig) -> Dict[str, torch.Tensor]:
    """Train (minus validation), validation and test tensors of the official layout."""
    root = official_dir(cfg.data_dir)
    x, y, yc = load_cifar100(root, "train")
    xt, yt, yct = load_cifar100(root, "test")
    if cfg.max_train:
        x, y, yc = x[: cfg.max_train], y[: cfg.max_train], yc[: cfg.max_train]
    if cfg.max_test:
        xt, yt, yct = xt[: cfg.max_test], yt[: cfg.max_test], yct[: cfg.max_test]
    tr, va = train_val_split(y, cfg.val_per_class, seed=cfg.seed)
    meta = load_meta(root)
    return {
        "x_train": x[tr], "y_train": y[tr], "x_val": x[va], "y_val": y[va], "x_test": xt, "y_test": yt,
        "fine_to_coarse": fine_to_coarse(torch.cat([y, yt]), torch.cat([yc, yct])),
        "fine_names": meta["fine_label_names"], "coarse_names": meta["coarse_label_names"],
    }


def accuracy_percent(logits_or_pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (%) of logits ``[N, C]`` or predictions ``[N]``; NaN for no images."""
    pred = logits_or_pred.argmax(-1) if logits_or_pred.dim() == 2 else logits_or_pred
    return 100.0 * float((pred == labels).float().mean()) if len(labels) else float("nan")


def load_generalist(cfg: SpecialistsConfig) -> CifarCNN:
    ckpt = torch.load(Path(cfg.exp_dir) / "generalist" / "model.pt", map_location="cpu")
    model = CifarCNN(NUM_CLASSES, ckpt["width"], ckpt["dropout"])
    model.load_state_dict(ckpt["state_dict"])
    return model


def generalist_logits(cfg: SpecialistsConfig) -> Dict[str, torch.Tensor]:
    path = Path(cfg.exp_dir) / "generalist" / "logits.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `asr-kd specialists generalist` first")
    return torch.load(path)


def load_clusters(cfg: SpecialistsConfig) -> dict:
    path = Path(cfg.exp_dir) / "clusters.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `asr-kd specialists cluster` first")
    return read_json(path)


def specialist_path(cfg: SpecialistsConfig, variant: str, m: int) -> Path:
    return Path(cfg.exp_dir) / "specialists" / variant / f"spec{m:02d}.pt"


# ----------------------------------------------------------------------------- steps


def prepare(cfg: SpecialistsConfig) -> Path:
    t0 = time.time()
    root = prepare_cifar100(cfg.data_dir, cfg.corpus_dir, download=not cfg.no_download)
    log.info("CIFAR-100 ready in %s (%.1f s)", root, time.time() - t0)
    return root


def generalist(cfg: SpecialistsConfig, command: Optional[str] = None) -> Optional[List[dict]]:
    """Train the generalist on all classes; save it and its logits; its train/dev/test rows."""
    out = Path(cfg.exp_dir) / "generalist"
    if (out / "logits.pt").is_file() and not cfg.force:
        log.info("%s exists: skipping the generalist", out / "logits.pt")
        return None
    data = load_data(cfg)
    seed_everything(cfg.seed)
    model = CifarCNN(NUM_CLASSES, cfg.width, cfg.dropout)
    dtype = resolve_dtype(cfg.dtype, cfg.device)
    norm = Normalize()

    def eval_fn(m, epoch):
        z = predict_logits(m, data["x_val"], 500, cfg.device, dtype, transform=norm)
        acc = accuracy_percent(z, data["y_val"])
        return {"val_accuracy": acc, "val_error": 100 - acc}

    train_cfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=0.9, nesterov=True,
        weight_decay=cfg.weight_decay, lr_schedule="cosine", warmup_epochs=min(1.0, cfg.epochs / 4),
        dtype=dtype, seed=cfg.seed, device=cfg.device, desc="generalist",
    )
    hist = train_classifier(model, data["x_train"], data["y_train"], train_cfg, augment=TrainTransform(),
                            eval_fn=eval_fn)
    logits = {
        split: predict_logits(model, data[f"x_{split}"], 500, cfg.device, dtype, transform=norm)
        for split in ("train", "val", "test")
    }
    logits.update({f"y_{s}": data[f"y_{s}"] for s in ("train", "val", "test")})
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "width": cfg.width,
                    "dropout": cfg.dropout, "config": train_cfg.to_dict(), "history": hist.epochs}, tmp)
    with atomic_path(out / "logits.pt") as tmp:
        torch.save(logits, tmp)
    params = sum(p.numel() for p in model.parameters())
    command = command or argv_command()
    rows = [{
        "system": "generalist", "set": "dev" if split == "val" else split,
        "accuracy": accuracy_percent(logits[split], logits[f"y_{split}"]), "images": len(logits[f"y_{split}"]),
        "width": cfg.width, "params": params, "epochs": cfg.epochs, "device": cfg.device, "dtype": dtype,
        "wall_s": round(hist.wall_s, 1), "command": command,
    } for split in ("train", "val", "test")]
    table = cfg.table(GENERALIST_TABLE)
    update_results(cfg.results_dir, rows, table, notes={table: paper_note("specialists", "generalist")})
    return rows


def cluster(cfg: SpecialistsConfig, command: Optional[str] = None) -> Optional[dict]:
    """Specialist subsets from K-means over the generalist's prediction covariance; clusters.json."""
    path = Path(cfg.exp_dir) / "clusters.json"
    if path.is_file() and not cfg.force:
        log.info("%s exists: skipping clustering", path)
        return None
    command = command or argv_command()
    t0 = time.time()
    cov = prediction_covariance(torch.softmax(generalist_logits(cfg)["train"], -1))
    root = official_dir(cfg.data_dir)
    _, yt, yct = load_cifar100(root, "test")
    f2c = fine_to_coarse(yt, yct)
    meta = load_meta(root)
    names, cnames = meta["fine_label_names"], meta["coarse_label_names"]
    normalize = not cfg.raw_columns
    subsets, partitions = cluster_classes(
        cov, cfg.num_clusters, cfg.kmeans_runs, cfg.min_cluster_size, normalize, seed=cfg.seed,
        max_size=cfg.max_cluster_size or None,
    )
    # The other column scaling, only for the comparison table (not used for the specialists).
    _, other = cluster_classes(cov, cfg.num_clusters, 1, cfg.min_cluster_size, not normalize, seed=cfg.seed)
    scores = [within_covariance(cov, s) for s in subsets]
    order = sorted(range(len(subsets)), key=lambda m: -scores[m])
    if cfg.max_specialists:
        order = order[: cfg.max_specialists]
    chosen = [subsets[m] for m in order]
    covered = np.zeros(NUM_CLASSES, dtype=int)
    for s in chosen:
        covered[s] += 1
    wall = round(time.time() - t0, 1)
    clusters = {
        "subsets": chosen, "within_covariance": [scores[m] for m in order],
        "names": [[names[c] for c in s] for s in chosen], "partitions": [p.tolist() for p in partitions],
        "num_clusters": cfg.num_clusters, "kmeans_runs": cfg.kmeans_runs, "normalize": normalize,
        "coverage": covered.tolist(),
    }
    write_json(path, clusters)

    def versus_superclasses(system: str, part: np.ndarray, columns: str, wall_s: float) -> dict:
        return {
            "system": system, "set": "train", "clusters": int(part.max() + 1),
            "ari_vs_superclasses": adjusted_rand_index(part, f2c),
            "purity_vs_superclasses": 100 * cluster_purity(part, f2c),
            "columns": columns, "wall_s": wall_s, "command": command,
        }

    scaling = "unit-length" if normalize else "raw"
    rows = [versus_superclasses(f"kmeans-run{r}" + ("" if normalize else "-raw"), part, scaling, wall)
            for r, part in enumerate(partitions)]
    rows.append(versus_superclasses("kmeans-run0" + ("-raw" if normalize else ""), other[0],
                                    "raw" if normalize else "unit-length", wall))
    # Reference: a random partition with the same cluster sizes.
    rng = np.random.default_rng(cfg.seed)
    rows.append({
        "system": "random-partition", "set": "train", "clusters": int(partitions[0].max() + 1),
        "ari_vs_superclasses": adjusted_rand_index(rng.permutation(partitions[0]), f2c),
        "purity_vs_superclasses": 100 * cluster_purity(rng.permutation(partitions[0]), f2c),
        "columns": "-", "wall_s": 0.0, "command": command,
    })
    table = cfg.table(CLUSTERS_TABLE)
    update_results(cfg.results_dir, rows, table, notes={table: paper_note("specialists", "clusters")})
    examples = [{
        "system": f"specialist-{m:02d}", "set": "train", "size": len(s),
        "within_cov_x1000": round(1000 * scores[order[m]], 3), "classes": ", ".join(names[c] for c in s),
        "superclasses": ", ".join(sorted({cnames[f2c[c]] for c in s})), "command": command,
    } for m, s in enumerate(chosen)]
    table = cfg.table(EXAMPLES_TABLE)
    note = paper_note("specialists", "examples", specialists=len(chosen), coverage_counts=np.bincount(covered).tolist())
    update_results(cfg.results_dir, examples, table, notes={table: note})
    for row in examples[:5]:
        log.info("%s: %s", row["system"], row["classes"])
    return clusters


def train_one_specialist(cfg: SpecialistsConfig, m: int, classes: List[int], variant: str,
                         data: Optional[Dict[str, torch.Tensor]] = None) -> Path:
    """Train specialist ``m`` on ``classes``; save its weights, history and logits; their path."""
    out = specialist_path(cfg, variant, m)
    if out.is_file() and not cfg.force:
        return out
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = data or load_data(cfg)
    dtype = resolve_dtype(cfg.dtype, cfg.device)
    norm = Normalize()
    generalist_model = load_generalist(cfg)
    x, y = data["x_train"], data["y_train"]
    special = torch.zeros(NUM_CLASSES, dtype=torch.bool)
    special[classes] = True
    sp_idx = torch.nonzero(special[y]).flatten()
    rest_idx = torch.nonzero(~special[y]).flatten()
    # Each pass: the whole special subset and as many images drawn afresh from the rest, so that
    # batches are (in expectation) half special, half other.
    g = torch.Generator().manual_seed(cfg.seed + 7919 * (m + 1))
    idx = torch.cat([
        torch.cat([sp_idx, rest_idx[torch.randperm(len(rest_idx), generator=g)[: len(sp_idx)]]])
        for _ in range(cfg.spec_epochs)
    ])
    dustbin = variant == "dustbin"
    model = make_specialist(generalist_model, classes, dustbin=dustbin)
    train_cfg = TrainConfig(
        epochs=1, batch_size=cfg.batch_size, lr=cfg.spec_lr, momentum=0.9, nesterov=True,
        weight_decay=cfg.weight_decay, lr_schedule="cosine", dtype=dtype,
        seed=cfg.seed + m, device=cfg.device, desc=f"{variant}-{m:02d}", progress=False,
        temperature=cfg.temperature, hard_weight=cfg.hard_weight, soft_weight=1.0,
    )
    t0 = time.time()
    # Undo the oversampling of the special data (a fraction f of the training set, half of the
    # specialist's batches): the dustbin's logit, or every non-special logit of a full softmax.
    log_factor = oversampling_log_factor(len(sp_idx) / len(y), 0.5)
    if dustbin:
        hist = train_classifier(model, x[idx], dustbin_labels(y[idx], classes, NUM_CLASSES), train_cfg,
                                augment=TrainTransform())
        correct_dustbin_bias(model.head, log_factor)
    else:
        p_g = tempered_softmax(generalist_logits(cfg)["train"][idx], cfg.temperature)
        targets = special_hard_soft_targets(p_g, y[idx], classes)
        hist = train_classifier(model, x[idx], y[idx], train_cfg, soft_targets=targets, augment=TrainTransform())
        with torch.no_grad():
            model.head.bias[~special.to(model.head.bias.device)] += log_factor
    logits = {
        "val": predict_logits(model, data["x_val"], 500, cfg.device, dtype, transform=norm),
        "test": predict_logits(model, data["x_test"], 500, cfg.device, dtype, transform=norm),
        "train_special": predict_logits(model, x[sp_idx], 500, cfg.device, dtype, transform=norm),
        "train_special_index": sp_idx,
    }
    with atomic_path(out) as tmp:
        torch.save({"classes": classes, "variant": variant,
                    "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                    "log_factor": log_factor, "history": hist.epochs, "wall_s": time.time() - t0,
                    "train_images": len(idx), "logits": logits}, tmp)
    log.info("%s-%02d: %d classes, %d training images, %.0f s", variant, m, len(classes), len(idx), time.time() - t0)
    return out


def _train_in_process(job: Tuple[SpecialistsConfig, int, List[int], str]) -> str:
    """:func:`train_one_specialist` in a worker process (which starts with no logging set up)."""
    setup_logging()
    return str(train_one_specialist(*job))


def specialists(cfg: SpecialistsConfig, command: Optional[str] = None) -> Optional[dict]:
    """Every specialist of ``cfg.variant`` not trained yet (``cfg.jobs`` at once); the summary row."""
    variant = cfg.variant
    subsets = load_clusters(cfg)["subsets"]
    todo = [m for m in range(len(subsets)) if cfg.force or not specialist_path(cfg, variant, m).is_file()]
    specialist_path(cfg, variant, 0).parent.mkdir(parents=True, exist_ok=True)
    log.info("%s specialists: %d of %d to train", variant, len(todo), len(subsets))
    if not todo:
        return None
    t0 = time.time()
    if cfg.jobs > 1 and len(todo) > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(cfg.jobs, mp_context=context) as pool:
            for path in pool.map(_train_in_process, [(cfg, m, subsets[m], variant) for m in todo]):
                log.info("done: %s", path)
    else:
        data = load_data(cfg)
        for m in tqdm(todo, desc=f"{variant} specialists"):
            train_one_specialist(cfg, m, subsets[m], variant, data)
    ckpts = [torch.load(specialist_path(cfg, variant, m)) for m in range(len(subsets))]
    row = {
        "system": f"specialists-{variant}", "set": "train", "specialists": len(subsets),
        "mean_classes": float(np.mean([len(s) for s in subsets])),
        "train_images_each": float(np.mean([c["train_images"] for c in ckpts])),
        "passes": cfg.spec_epochs, "wall_s": round(time.time() - t0, 1),
        "sum_specialist_s": round(sum(c["wall_s"] for c in ckpts), 1), "jobs": cfg.jobs,
        "command": command or argv_command(),
    }
    update_results(cfg.results_dir, [row], cfg.table(TRAINING_TABLE))
    return row


def specialist_probs(cfg: SpecialistsConfig, variant: str, num_specialists: int, split: str) -> List[torch.Tensor]:
    out = []
    for m in range(num_specialists):
        path = specialist_path(cfg, variant, m)
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: run `asr-kd specialists specialists --variant {variant}`")
        out.append(torch.softmax(torch.load(path)["logits"][split], -1))
    return out


def combined_predictions(cfg: SpecialistsConfig, pg: torch.Tensor, sp: Sequence[torch.Tensor],
                         subsets: Sequence[Sequence[int]], top_n: int, batch_size: int = 2000) -> torch.Tensor:
    """Top-1 classes of the KL combination of the generalist ``pg`` and the specialists ``sp``
    active on each image (those whose subset holds one of the generalist's ``top_n``)."""
    active = active_specialists(pg, subsets, top_n)
    preds = []
    for i in range(0, len(pg), batch_size):
        q = combine_kl(pg[i:i + batch_size], [p[i:i + batch_size] for p in sp], subsets, active[i:i + batch_size],
                       steps=cfg.kl_steps, lr=cfg.kl_lr)
        preds.append(q.argmax(-1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def _system_name(n: int, paper_n: int) -> str:
    """``generalist+specialists`` for the configured (paper's) n, else with ``-top<n>``."""
    return "generalist+specialists" if n == paper_n else f"generalist+specialists-top{n}"


def combine(cfg: SpecialistsConfig, command: Optional[str] = None) -> Tuple[List[dict], List[dict]]:
    """Generalist + dustbin specialists on the test set (n also chosen on dev): Tables 3 and 4."""
    command = command or argv_command()
    t0 = time.time()
    clusters = load_clusters(cfg)
    subsets = clusters["subsets"]
    lg = generalist_logits(cfg)
    coverage = torch.tensor(clusters["coverage"])
    # n chosen on the validation split.
    pg_val = torch.softmax(lg["val"], -1)
    sp_val = specialist_probs(cfg, "dustbin", len(subsets), "val")
    val_acc = {}
    for n in sorted({cfg.top_n, *cfg.top_n_candidates}):
        val_acc[n] = accuracy_percent(combined_predictions(cfg, pg_val, sp_val, subsets, n), lg["y_val"])
        log.info("dev: top-%d activation -> %.2f%% (generalist %.2f%%)", n, val_acc[n],
                 accuracy_percent(pg_val, lg["y_val"]))
    best_n = max(val_acc, key=lambda n: (val_acc[n], -n))
    pg = torch.softmax(lg["test"], -1)
    y = lg["y_test"]
    sp = specialist_probs(cfg, "dustbin", len(subsets), "test")
    base = pg.argmax(-1)
    cond = coverage[y] > 0
    rows = [{
        "system": "generalist", "set": "test", "accuracy": accuracy_percent(base, y),
        "conditional_accuracy": accuracy_percent(base[cond], y[cond]), "specialists": 0, "top_n": "-",
        "images": len(y), "conditional_images": int(cond.sum()), "command": command,
    }]
    combined = {}
    for n in sorted({cfg.top_n, best_n}):
        pred = combined_predictions(cfg, pg, sp, subsets, n)
        combined[n] = pred
        rows.append({
            "system": _system_name(n, cfg.top_n), "set": "test", "accuracy": accuracy_percent(pred, y),
            "conditional_accuracy": accuracy_percent(pred[cond], y[cond]), "specialists": len(subsets), "top_n": n,
            "n_chosen_on_dev": n == best_n, "images": len(y), "conditional_images": int(cond.sum()),
            "dev_accuracy": val_acc.get(n), "command": command,
        })
    for n, acc in val_acc.items():
        rows.append({"system": _system_name(n, cfg.top_n), "set": "dev", "accuracy": acc,
                     "specialists": len(subsets), "top_n": n, "images": len(lg["y_val"]), "command": command})
    rows.append({"system": "generalist", "set": "dev", "accuracy": accuracy_percent(pg_val, lg["y_val"]),
                 "specialists": 0, "top_n": "-", "images": len(lg["y_val"]), "command": command})
    wall = round(time.time() - t0, 1)
    for r in rows:
        r["wall_s"] = wall
    table = cfg.table(TABLE3)
    update_results(cfg.results_dir, rows, table, columns=TABLE3_COLUMNS,
                   notes={table: paper_note("specialists", "table3")})
    # Table 4: by the number of specialists covering the true class.
    pred = combined[cfg.top_n]
    by_coverage = []
    for k in range(int(coverage.max()) + 1):
        sel = coverage[y] == k
        images = int(sel.sum())
        if images == 0:
            continue
        correct_base = int((base[sel] == y[sel]).sum())
        correct_combined = int((pred[sel] == y[sel]).sum())
        by_coverage.append({
            "system": f"covered-by-{k}", "set": "test", "images": images, "correct_generalist": correct_base,
            "correct_combined": correct_combined, "delta_correct": correct_combined - correct_base,
            "relative_accuracy_change": 100.0 * (correct_combined - correct_base) / max(correct_base, 1),
            "top_n": cfg.top_n, "command": command,
        })
    table = cfg.table(TABLE4)
    update_results(cfg.results_dir, by_coverage, table, notes={table: paper_note("specialists", "table4")})
    return rows, by_coverage


@dataclasses.dataclass
class _Ratio:
    """A sum over specialists: ``num / den``."""

    num: float = 0
    den: int = 0

    def add(self, num: float, den: int) -> None:
        self.num += num
        self.den += den

    def percent(self) -> Optional[float]:
        return 100.0 * self.num / self.den if self.den else None


def _correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    return int((logits.argmax(-1) == labels).sum())


def overfit(cfg: SpecialistsConfig, command: Optional[str] = None) -> List[dict]:
    """Section 6.1: train vs test accuracy on the special classes, per specialist kind."""
    command = command or argv_command()
    t0 = time.time()
    subsets = load_clusters(cfg)["subsets"]
    lg = generalist_logits(cfg)
    y_tr, y_te = lg["y_train"], lg["y_test"]
    rows = []
    for variant in ("generalist",) + VARIANTS:
        kind = "dustbin" if variant == "generalist" else variant  # the generalist: on the dustbin subsets
        paths = [specialist_path(cfg, kind, m) for m in range(len(subsets))]
        missing = [p for p in paths if not p.is_file()]
        if missing and variant == "generalist":
            raise FileNotFoundError(f"{missing[0]} missing")
        if missing:
            log.warning("no %s specialists: skipped", variant)
            continue
        train, test, nll, other = _Ratio(), _Ratio(), _Ratio(), _Ratio()
        for s, path in zip(subsets, paths):
            ck = torch.load(path)
            k = len(s)
            sp_idx = ck["logits"]["train_special_index"]
            special = torch.zeros(NUM_CLASSES, dtype=torch.bool)
            special[s] = True
            local = torch.full((NUM_CLASSES,), -1, dtype=torch.long)
            local[s] = torch.arange(k)
            te = special[y_te]
            if variant == "generalist":
                z_tr, z_te, full_te = lg["train"][sp_idx][:, s], lg["test"][te][:, s], lg["test"]
            elif variant == "dustbin":
                z_tr, z_te, full_te = ck["logits"]["train_special"][:, :k], ck["logits"]["test"][te][:, :k], None
            else:
                z_tr, z_te = ck["logits"]["train_special"][:, s], ck["logits"]["test"][te][:, s]
                full_te = ck["logits"]["test"]
            # Accuracy among the special classes, for images of the special classes.
            train.add(_correct(z_tr, local[y_tr[sp_idx]]), len(sp_idx))
            test.add(_correct(z_te, local[y_te[te]]), int(te.sum()))
            nll.add(float(torch.nn.functional.cross_entropy(z_te, local[y_te[te]], reduction="sum")), int(te.sum()))
            if full_te is not None:  # full-softmax models: accuracy on the other classes' test images
                other.add(_correct(full_te[~te], y_te[~te]), int((~te).sum()))
        name = variant if variant == "generalist" else f"specialists-{variant}"
        rows.append({"system": name, "set": "train", "special_accuracy": train.percent(), "images": train.den,
                     "command": command})
        rows.append({
            "system": name, "set": "test", "special_accuracy": test.percent(), "images": test.den,
            "train_minus_test": train.percent() - test.percent(), "special_nll": nll.num / nll.den,
            "other_classes_accuracy": other.percent(), "command": command,
        })
    wall = round(time.time() - t0, 1)
    for r in rows:
        r["wall_s"] = wall
    table = cfg.table(OVERFIT_TABLE)
    update_results(cfg.results_dir, rows, table, columns=OVERFIT_COLUMNS,
                   notes={table: paper_note("specialists", "overfit")})
    return rows


def run_step(cfg: SpecialistsConfig, step: str, command: Optional[str] = None):
    """Run the step named ``step`` (one of :data:`STEPS`); returns what the step returns."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    Path(cfg.results_dir).mkdir(parents=True, exist_ok=True)
    if step == "prepare":
        return prepare(cfg)
    steps = {"generalist": generalist, "cluster": cluster, "specialists": specialists, "combine": combine,
             "overfit": overfit}
    if step not in steps:
        raise ValueError(f"unknown specialists step {step!r}; choose from {STEPS}")
    return steps[step](cfg, command or argv_command())
