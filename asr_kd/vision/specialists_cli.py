"""``asr-kd specialists <step>``: the CIFAR-100 generalist + specialists recipe (paper sections 5, 6.1).

Steps (each resumable: it skips work whose outputs exist unless ``--force``; outputs are written
atomically; numbers go to ``RESULTS.md`` / ``results.json`` in ``--results-dir``):

- ``prepare``: the official ``cifar-100-python`` layout in ``--data-dir`` (from the shared copy or
  a download).
- ``generalist``: train the CNN on all 100 classes (a class-stratified validation split held out);
  save its logits on train / val / test.
- ``cluster``: covariance of the generalist's predicted probabilities on the training set,
  on-line K-means over its columns, comparison with the 20 superclasses, example clusters.
- ``specialists --variant dustbin|full-soft``: one specialist per cluster, initialised from the
  generalist, trained on batches half special / half other; ``dustbin`` has ``|S|+1`` outputs and
  its dustbin logit corrected for the oversampling afterwards; ``full-soft`` (section 6.1) keeps the
  full softmax and learns hard targets among its special classes plus the generalist's soft targets
  among the others.
- ``combine``: the KL combination of the generalist and the active dustbin specialists; Table 3
  (accuracy, conditional accuracy) and Table 4 (change by number of specialists covering the class).
- ``overfit``: section 6.1's comparison: train vs test accuracy on the special classes.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from asr_kd.distill import tempered_softmax
from asr_kd.results import update_results
from asr_kd.utils import atomic_path, read_json, seed_everything, write_json

log = logging.getLogger(__name__)

STEPS = ("prepare", "generalist", "cluster", "specialists", "combine", "overfit")
VARIANTS = ("dustbin", "full-soft")

# Settings of --quick (minutes on a CPU, for tests and smoke runs); None keeps the given value.
QUICK = dict(
    max_train=3000, max_test=1000, val_per_class=5, width=8, epochs=2, spec_epochs=1,
    num_clusters=8, kmeans_runs=2, max_specialists=0, kl_steps=100, batch_size=64,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("step", choices=STEPS, help="the recipe step to run")
    g = parser.add_argument_group("data and output")
    g.add_argument("--data-dir", default="data", help="holds (or receives) cifar-100-python/")
    g.add_argument("--corpus-dir", default=None, help="the shared WebP copy (corpora/cifar100) to convert from")
    g.add_argument("--no-download", action="store_true", help="prepare: never download")
    g.add_argument("--exp-dir", default="exp", help="models, logits and clusters")
    g.add_argument("--results-dir", default=".", help="where RESULTS.md / results.json are written")
    g.add_argument("--max-train", type=int, default=0, help="use the first N training images (0 = all)")
    g.add_argument("--max-test", type=int, default=0, help="use the first N test images (0 = all)")
    g.add_argument("--val-per-class", type=int, default=50, help="training images per class held out for validation")
    g.add_argument("--quick", action="store_true", help="tiny settings that run in minutes: " + str(QUICK))
    g.add_argument("--force", action="store_true", help="redo work whose outputs exist")
    g.add_argument("--table-suffix", default="",
                   help="appended to the names of the RESULTS tables written (for extra experiments)")
    t = parser.add_argument_group("training")
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 autocast where the hardware has fast bf16 (CUDA, AVX512-BF16/AMX CPUs), else fp32 "
                        "(emulated bf16 convolutions were ~20x slower than fp32 on this AVX2 CPU)")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--width", type=int, default=16, help="CNN width (channels of the first conv)")
    t.add_argument("--dropout", type=float, default=0.2)
    t.add_argument("--epochs", type=int, default=10, help="generalist epochs")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--weight-decay", type=float, default=5e-4)
    c = parser.add_argument_group("clusters")
    c.add_argument("--num-clusters", type=int, default=10, help="K of each K-means run")
    c.add_argument("--kmeans-runs", type=int, default=2,
                   help="K-means runs (seeds); their clusters together are the specialists, so a class "
                        "is covered by up to this many")
    c.add_argument("--min-cluster-size", type=int, default=2)
    c.add_argument("--max-cluster-size", type=int, default=25,
                   help="drop clusters larger than this (K-means can lump many poorly separated classes "
                        "together; 0 = no limit)")
    c.add_argument("--max-specialists", type=int, default=0,
                   help="keep the N most confused clusters (highest within-cluster covariance; 0 = all)")
    c.add_argument("--raw-columns", action="store_true",
                   help="cluster the raw covariance columns instead of unit-length ones")
    s = parser.add_argument_group("specialists")
    s.add_argument("--variant", default="dustbin", choices=VARIANTS)
    s.add_argument("--spec-epochs", type=int, default=3, help="passes over each specialist's special subset")
    s.add_argument("--spec-lr", type=float, default=0.02)
    s.add_argument("--temperature", type=float, default=2.0, help="full-soft: temperature of the soft targets")
    s.add_argument("--hard-weight", type=float, default=0.5, help="full-soft: weight of the hard-label term")
    s.add_argument("--jobs", type=int, default=1, help="specialists trained at once (processes)")
    i = parser.add_argument_group("inference")
    i.add_argument("--top-n", type=int, default=1, help="generalist's top-n classes that activate specialists (paper: 1)")
    i.add_argument("--top-n-candidates", default="1,2,3", help="also choose n on the validation split among these")
    i.add_argument("--kl-steps", type=int, default=300, help="gradient steps on z")
    i.add_argument("--kl-lr", type=float, default=0.3)


def _apply_quick(args) -> None:
    if not args.quick:
        return
    for k, v in QUICK.items():
        setattr(args, k, v)


_COMMAND = "asr-kd specialists"


def _command() -> str:
    return _COMMAND


def _update(args, rows, table: str, notes=None, columns=None) -> None:
    """``update_results`` into ``--results-dir``, table names extended by ``--table-suffix``."""
    sfx = args.table_suffix
    notes = {k + sfx: v for k, v in notes.items()} if notes else None
    update_results(args.results_dir, rows, table + sfx, notes=notes, columns=columns)


def _reconstruct_command(args) -> str:
    """The ``asr-kd specialists ...`` command line of ``args`` (options that differ from their
    defaults), as written in the rows of RESULTS.md. Works whether called from the shell or
    through :func:`asr_kd.cli.main`."""
    parser = getattr(args, "_parser", None)
    parts = ["asr-kd", "specialists", args.step]
    if parser is None:
        return " ".join(["asr-kd"] + [shlex.quote(a) for a in sys.argv[1:]])
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        value = getattr(args, action.dest, None)
        if value == action.default:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            parts.append(action.option_strings[0])
        else:
            parts += [action.option_strings[0], shlex.quote(str(value))]
    return " ".join(parts)


def _precision(args) -> str:
    from asr_kd.vision.train import resolve_precision

    return resolve_precision(args.precision, args.device)


# ----------------------------------------------------------------------------- data


def load_data(args) -> Dict[str, torch.Tensor]:
    """Train (minus validation), validation and test tensors of the official layout."""
    from asr_kd.vision.cifar import fine_to_coarse, load_cifar100, load_meta, official_dir, train_val_split

    root = official_dir(args.data_dir)
    x, y, yc = load_cifar100(root, "train")
    xt, yt, yct = load_cifar100(root, "test")
    if args.max_train:
        x, y, yc = x[: args.max_train], y[: args.max_train], yc[: args.max_train]
    if args.max_test:
        xt, yt, yct = xt[: args.max_test], yt[: args.max_test], yct[: args.max_test]
    tr, va = train_val_split(y, args.val_per_class, seed=args.seed)
    meta = load_meta(root)
    return {
        "x_train": x[tr], "y_train": y[tr], "x_val": x[va], "y_val": y[va], "x_test": xt, "y_test": yt,
        "fine_to_coarse": fine_to_coarse(torch.cat([y, yt]), torch.cat([yc, yct])),
        "fine_names": meta["fine_label_names"], "coarse_names": meta["coarse_label_names"],
    }


def _accuracy(logits_or_pred: torch.Tensor, labels: torch.Tensor) -> float:
    pred = logits_or_pred.argmax(-1) if logits_or_pred.dim() == 2 else logits_or_pred
    return 100.0 * float((pred == labels).float().mean()) if len(labels) else float("nan")


def _load_generalist(args):
    from asr_kd.vision.cnn import CifarCNN

    ckpt = torch.load(Path(args.exp_dir) / "generalist" / "model.pt", map_location="cpu")
    model = CifarCNN(100, ckpt["width"], ckpt["dropout"])
    model.load_state_dict(ckpt["state_dict"])
    return model


def _generalist_logits(args) -> Dict[str, torch.Tensor]:
    path = Path(args.exp_dir) / "generalist" / "logits.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `asr-kd specialists generalist` first")
    return torch.load(path)


# ----------------------------------------------------------------------------- steps


def step_prepare(args) -> None:
    from asr_kd.vision.cifar import prepare_cifar100

    t0 = time.time()
    root = prepare_cifar100(args.data_dir, args.corpus_dir, download=not args.no_download)
    log.info("CIFAR-100 ready in %s (%.1f s)", root, time.time() - t0)


def step_generalist(args) -> None:
    from asr_kd.vision.cifar import Normalize, TrainTransform
    from asr_kd.vision.cnn import CifarCNN
    from asr_kd.vision.train import TrainConfig, predict_logits, train_classifier

    out = Path(args.exp_dir) / "generalist"
    if (out / "logits.pt").is_file() and not args.force:
        log.info("%s exists: skipping the generalist", out / "logits.pt")
        return
    data = load_data(args)
    seed_everything(args.seed)
    model = CifarCNN(100, args.width, args.dropout)
    prec = _precision(args)
    norm = Normalize()

    def eval_fn(m, epoch):
        z = predict_logits(m, data["x_val"], 500, args.device, prec, transform=norm)
        return {"val_accuracy": _accuracy(z, data["y_val"]), "val_error": 100 - _accuracy(z, data["y_val"])}

    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=0.9, nesterov=True,
        weight_decay=args.weight_decay, lr_schedule="cosine", warmup_epochs=min(1.0, args.epochs / 4),
        precision=prec, seed=args.seed, device=args.device, desc="generalist",
    )
    hist = train_classifier(model, data["x_train"], data["y_train"], cfg, augment=TrainTransform(), eval_fn=eval_fn)
    logits = {
        split: predict_logits(model, data[f"x_{split}"], 500, args.device, prec, transform=norm)
        for split in ("train", "val", "test")
    }
    logits.update({f"y_{s}": data[f"y_{s}"] for s in ("train", "val", "test")})
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "width": args.width, "dropout": args.dropout,
                    "config": cfg.to_dict(), "history": hist.epochs}, tmp)
    with atomic_path(out / "logits.pt") as tmp:
        torch.save(logits, tmp)
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for split in ("train", "val", "test"):
        rows.append({
            "system": "generalist", "set": "dev" if split == "val" else split,
            "accuracy": _accuracy(logits[split], logits[f"y_{split}"]), "images": len(logits[f"y_{split}"]),
            "width": args.width, "params": params, "epochs": args.epochs, "device": args.device,
            "precision": prec, "wall_s": round(hist.wall_s, 1), "command": _command(),
        })
    _update(args, rows, "Generalist",
                   notes={"Generalist": "The CNN trained on all 100 classes (dev = the held-out part of the "
                                        "training set; train accuracy without augmentation)."})


def step_cluster(args) -> None:
    from asr_kd.vision.specialists import (
        adjusted_rand_index, cluster_classes, cluster_purity, prediction_covariance, within_covariance,
    )
    from asr_kd.vision.cifar import fine_to_coarse, load_cifar100, load_meta, official_dir

    path = Path(args.exp_dir) / "clusters.json"
    if path.is_file() and not args.force:
        log.info("%s exists: skipping clustering", path)
        return
    t0 = time.time()
    lg = _generalist_logits(args)
    probs = torch.softmax(lg["train"], -1)
    cov = prediction_covariance(probs)
    root = official_dir(args.data_dir)
    _, yt, yct = load_cifar100(root, "test")
    f2c = fine_to_coarse(yt, yct)
    meta = load_meta(root)
    names, cnames = meta["fine_label_names"], meta["coarse_label_names"]
    normalize = not args.raw_columns
    subsets, partitions = cluster_classes(
        cov, args.num_clusters, args.kmeans_runs, args.min_cluster_size, normalize, seed=args.seed,
        max_size=args.max_cluster_size or None,
    )
    # The other column scaling, only for the comparison table (not used for the specialists).
    _, other = cluster_classes(cov, args.num_clusters, 1, args.min_cluster_size, not normalize, seed=args.seed)
    scores = [within_covariance(cov, s) for s in subsets]
    order = sorted(range(len(subsets)), key=lambda m: -scores[m])
    if args.max_specialists:
        order = order[: args.max_specialists]
    chosen = [subsets[m] for m in order]
    covered = np.zeros(100, dtype=int)
    for s in chosen:
        covered[s] += 1
    wall = round(time.time() - t0, 1)
    write_json(path, {
        "subsets": chosen, "within_covariance": [scores[m] for m in order],
        "names": [[names[c] for c in s] for s in chosen], "partitions": [p.tolist() for p in partitions],
        "num_clusters": args.num_clusters, "kmeans_runs": args.kmeans_runs, "normalize": normalize,
        "coverage": covered.tolist(),
    })
    rows = []
    for r, part in enumerate(partitions):
        rows.append({
            "system": f"kmeans-run{r}" + ("" if normalize else "-raw"), "set": "train",
            "clusters": int(part.max() + 1), "ari_vs_superclasses": adjusted_rand_index(part, f2c),
            "purity_vs_superclasses": 100 * cluster_purity(part, f2c),
            "columns": "unit-length" if normalize else "raw", "wall_s": wall, "command": _command(),
        })
    rows.append({
        "system": "kmeans-run0" + ("-raw" if normalize else ""), "set": "train",
        "clusters": int(other[0].max() + 1), "ari_vs_superclasses": adjusted_rand_index(other[0], f2c),
        "purity_vs_superclasses": 100 * cluster_purity(other[0], f2c),
        "columns": "raw" if normalize else "unit-length", "wall_s": wall, "command": _command(),
    })
    # Reference: a random partition with the same cluster sizes.
    rng = np.random.default_rng(args.seed)
    rows.append({
        "system": "random-partition", "set": "train", "clusters": int(partitions[0].max() + 1),
        "ari_vs_superclasses": adjusted_rand_index(rng.permutation(partitions[0]), f2c),
        "purity_vs_superclasses": 100 * cluster_purity(rng.permutation(partitions[0]), f2c),
        "columns": "-", "wall_s": 0.0, "command": _command(),
    })
    _update(args, rows, "Clusters vs superclasses",
                   notes={"Clusters vs superclasses": (
                       "On-line K-means over the columns of the covariance of the generalist's predicted "
                       "probabilities on the training set (no labels used); compared with CIFAR-100's 20 "
                       "superclasses by adjusted Rand index (0 = chance, 1 = identical) and purity (%).")})
    ex_rows = []
    for m, s in enumerate(chosen):
        supers = sorted({cnames[f2c[c]] for c in s})
        ex_rows.append({
            "system": f"specialist-{m:02d}", "set": "train", "size": len(s),
            "within_cov_x1000": round(1000 * scores[order[m]], 3),
            "classes": ", ".join(names[c] for c in s), "superclasses": ", ".join(supers),
            "command": _command(),
        })
    _update(args, ex_rows, "Example clusters (Table 2)",
                   notes={"Example clusters (Table 2)": (
                       f"The specialists' subsets, most confused first (mean off-diagonal covariance of the "
                       f"generalist's probabilities inside the subset, x1000; {len(chosen)} specialists; "
                       f"classes covered by 0/1/2/... specialists: "
                       f"{np.bincount(covered).tolist()}).")})
    for row in ex_rows[:5]:
        log.info("%s: %s", row["system"], row["classes"])


def _clusters(args) -> dict:
    path = Path(args.exp_dir) / "clusters.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `asr-kd specialists cluster` first")
    return read_json(path)


def _spec_path(args, variant: str, m: int) -> Path:
    return Path(args.exp_dir) / "specialists" / variant / f"spec{m:02d}.pt"


def train_one_specialist(args, m: int, classes: List[int], variant: str, data=None) -> Path:
    """Train specialist ``m`` on ``classes``; save its weights, history and logits."""
    from asr_kd.vision.cifar import Normalize, TrainTransform
    from asr_kd.vision.cnn import make_specialist
    from asr_kd.vision.specialists import (
        correct_dustbin_bias, dustbin_labels, oversampling_log_factor, special_hard_soft_targets,
    )
    from asr_kd.vision.train import TrainConfig, predict_logits, train_classifier

    out = _spec_path(args, variant, m)
    if out.is_file() and not args.force:
        return out
    if args.threads:
        torch.set_num_threads(args.threads)
    data = data or load_data(args)
    prec = _precision(args)
    norm = Normalize()
    generalist = _load_generalist(args)
    x, y = data["x_train"], data["y_train"]
    special = torch.zeros(100, dtype=torch.bool)
    special[classes] = True
    sp_idx = torch.nonzero(special[y]).flatten()
    rest_idx = torch.nonzero(~special[y]).flatten()
    # Each pass: the whole special subset and as many images drawn afresh from the rest, so that
    # batches are (in expectation) half special, half other.
    g = torch.Generator().manual_seed(args.seed + 7919 * (m + 1))
    idx = torch.cat([
        torch.cat([sp_idx, rest_idx[torch.randperm(len(rest_idx), generator=g)[: len(sp_idx)]]])
        for _ in range(args.spec_epochs)
    ])
    dustbin = variant == "dustbin"
    model = make_specialist(generalist, classes, dustbin=dustbin)
    cfg = TrainConfig(
        epochs=1, batch_size=args.batch_size, lr=args.spec_lr, momentum=0.9, nesterov=True,
        weight_decay=args.weight_decay, lr_schedule="cosine", precision=prec,
        seed=args.seed + m, device=args.device, desc=f"{variant}-{m:02d}", progress=False,
        temperature=args.temperature, hard_weight=args.hard_weight, soft_weight=1.0,
    )
    t0 = time.time()
    # Undo the oversampling of the special data (a fraction f of the training set, half of the
    # specialist's batches): the dustbin's logit, or every non-special logit of a full softmax.
    log_factor = oversampling_log_factor(len(sp_idx) / len(y), 0.5)
    if dustbin:
        hist = train_classifier(model, x[idx], dustbin_labels(y[idx], classes, 100), cfg, augment=TrainTransform())
        correct_dustbin_bias(model.head, log_factor)
    else:
        lg = _generalist_logits(args)
        p_g = tempered_softmax(lg["train"][idx], args.temperature)
        targets = special_hard_soft_targets(p_g, y[idx], classes)
        hist = train_classifier(model, x[idx], y[idx], cfg, soft_targets=targets, augment=TrainTransform())
        with torch.no_grad():
            model.head.bias[~special.to(model.head.bias.device)] += log_factor
    logits = {
        "val": predict_logits(model, data["x_val"], 500, args.device, prec, transform=norm),
        "test": predict_logits(model, data["x_test"], 500, args.device, prec, transform=norm),
        "train_special": predict_logits(model, x[sp_idx], 500, args.device, prec, transform=norm),
        "train_special_index": sp_idx,
    }
    with atomic_path(out) as tmp:
        torch.save({"classes": classes, "variant": variant,
                    "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                    "log_factor": log_factor, "history": hist.epochs, "wall_s": time.time() - t0,
                    "train_images": len(idx), "logits": logits}, tmp)
    log.info("%s-%02d: %d classes, %d training images, %.0f s", variant, m, len(classes), len(idx), time.time() - t0)
    return out


def _train_worker(payload):
    args, m, classes, variant = payload
    from asr_kd.utils import setup_logging

    setup_logging()
    return str(train_one_specialist(args, m, classes, variant))


def step_specialists(args) -> None:
    subsets = _clusters(args)["subsets"]
    todo = [m for m in range(len(subsets)) if args.force or not _spec_path(args, args.variant, m).is_file()]
    _spec_path(args, args.variant, 0).parent.mkdir(parents=True, exist_ok=True)
    log.info("%s specialists: %d of %d to train", args.variant, len(todo), len(subsets))
    t0 = time.time()
    if args.jobs > 1 and len(todo) > 1:
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        plain = argparse.Namespace(**{k: v for k, v in vars(args).items() if not k.startswith("_")})
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            for path in pool.map(_train_worker, [(plain, m, subsets[m], args.variant) for m in todo]):
                log.info("done: %s", path)
    elif todo:
        data = load_data(args)
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover
            tqdm = lambda it, **kw: it  # noqa: E731
        for m in tqdm(todo, desc=f"{args.variant} specialists"):
            train_one_specialist(args, m, subsets[m], args.variant, data)
    if todo:
        ckpts = [torch.load(_spec_path(args, args.variant, m)) for m in range(len(subsets))]
        _update(args, [{
            "system": f"specialists-{args.variant}", "set": "train", "specialists": len(subsets),
            "mean_classes": float(np.mean([len(s) for s in subsets])),
            "train_images_each": float(np.mean([c["train_images"] for c in ckpts])),
            "passes": args.spec_epochs, "wall_s": round(time.time() - t0, 1),
            "sum_specialist_s": round(sum(c["wall_s"] for c in ckpts), 1), "jobs": args.jobs,
            "command": _command(),
        }], "Specialist training")


def _specialist_probs(args, variant: str, subsets, split: str) -> List[torch.Tensor]:
    out = []
    for m in range(len(subsets)):
        path = _spec_path(args, variant, m)
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: run `asr-kd specialists specialists --variant {variant}`")
        out.append(torch.softmax(torch.load(path)["logits"][split], -1))
    return out


def _combined_predictions(args, pg, sp, subsets, top_n) -> torch.Tensor:
    from asr_kd.vision.specialists import active_specialists, combine_kl

    active = active_specialists(pg, subsets, top_n)
    preds = []
    bs = 2000
    for i in range(0, len(pg), bs):
        q = combine_kl(pg[i:i + bs], [p[i:i + bs] for p in sp], subsets, active[i:i + bs],
                       steps=args.kl_steps, lr=args.kl_lr)
        preds.append(q.argmax(-1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def _system_name(n: int, paper_n: int) -> str:
    """``generalist+specialists`` for the configured (paper's) n, else with ``-top<n>``."""
    return "generalist+specialists" if n == paper_n else f"generalist+specialists-top{n}"


def step_combine(args) -> None:
    t0 = time.time()
    cl = _clusters(args)
    subsets = cl["subsets"]
    lg = _generalist_logits(args)
    coverage = torch.tensor(cl["coverage"])
    # n chosen on the validation split.
    pg_val = torch.softmax(lg["val"], -1)
    sp_val = _specialist_probs(args, "dustbin", subsets, "val")
    val_acc = {}
    for n in sorted({args.top_n, *[int(v) for v in args.top_n_candidates.split(",") if v]}):
        val_acc[n] = _accuracy(_combined_predictions(args, pg_val, sp_val, subsets, n), lg["y_val"])
        log.info("dev: top-%d activation -> %.2f%% (generalist %.2f%%)", n, val_acc[n], _accuracy(pg_val, lg["y_val"]))
    best_n = max(val_acc, key=lambda n: (val_acc[n], -n))
    pg = torch.softmax(lg["test"], -1)
    y = lg["y_test"]
    sp = _specialist_probs(args, "dustbin", subsets, "test")
    base = pg.argmax(-1)
    cond = coverage[y] > 0
    rows = [{
        "system": "generalist", "set": "test", "accuracy": _accuracy(base, y),
        "conditional_accuracy": _accuracy(base[cond], y[cond]), "specialists": 0, "top_n": "-",
        "images": len(y), "conditional_images": int(cond.sum()), "command": _command(),
    }]
    combined = {}
    for n in sorted({args.top_n, best_n}):
        pred = _combined_predictions(args, pg, sp, subsets, n)
        combined[n] = pred
        rows.append({
            "system": _system_name(n, args.top_n), "set": "test", "accuracy": _accuracy(pred, y),
            "conditional_accuracy": _accuracy(pred[cond], y[cond]), "specialists": len(subsets), "top_n": n,
            "n_chosen_on_dev": n == best_n, "images": len(y), "conditional_images": int(cond.sum()),
            "dev_accuracy": val_acc.get(n), "command": _command(),
        })
    for n, acc in val_acc.items():
        rows.append({"system": _system_name(n, args.top_n), "set": "dev", "accuracy": acc,
                     "specialists": len(subsets), "top_n": n, "images": len(lg["y_val"]), "command": _command()})
    rows.append({"system": "generalist", "set": "dev", "accuracy": _accuracy(pg_val, lg["y_val"]), "specialists": 0,
                 "top_n": "-", "images": len(lg["y_val"]), "command": _command()})
    wall = round(time.time() - t0, 1)
    for r in rows:
        r["wall_s"] = wall
    _update(args, rows, "Table 3: generalist + specialists",
                   columns=["system", "set", "accuracy", "conditional_accuracy", "specialists", "top_n",
                            "n_chosen_on_dev", "images", "conditional_images", "dev_accuracy", "wall_s"],
                   notes={"Table 3: generalist + specialists": (
                       "Top-1 accuracy (%). Conditional accuracy: on test images whose true class is covered by "
                       "at least one specialist (equal to the accuracy when the specialists cover every class). "
                       "Specialists are active on an image when their subset holds one "
                       "of the generalist's top-n classes; q minimises KL(p_g, q) + sum_m KL(p_m, q_m). "
                       "Paper (JFT, 61 specialists): test accuracy 25.0% -> 26.1%, conditional 43.1% -> 45.9%. "
                       "n_chosen_on_dev marks the n that the validation (dev) split picked among the candidates.")})
    # Table 4: by the number of specialists covering the true class.
    pred = combined[args.top_n]
    t4 = []
    for k in range(int(coverage.max()) + 1):
        sel = coverage[y] == k
        nb = int(sel.sum())
        if nb == 0:
            continue
        c_base = int((base[sel] == y[sel]).sum())
        c_comb = int((pred[sel] == y[sel]).sum())
        t4.append({
            "system": f"covered-by-{k}", "set": "test", "images": nb, "correct_generalist": c_base,
            "correct_combined": c_comb, "delta_correct": c_comb - c_base,
            "relative_accuracy_change": 100.0 * (c_comb - c_base) / max(c_base, 1), "top_n": args.top_n,
            "command": _command(),
        })
    _update(args, t4, "Table 4: change by number of specialists covering the class",
                   notes={"Table 4: change by number of specialists covering the class": (
                       "Test images grouped by how many specialists cover their true class; change in top-1 "
                       "correct from the generalist to generalist + specialists (relative change in %).")})


def step_overfit(args) -> None:
    """Section 6.1: train vs test accuracy on the special classes, per specialist kind."""
    t0 = time.time()
    subsets = _clusters(args)["subsets"]
    lg = _generalist_logits(args)
    y_tr, y_te = lg["y_train"], lg["y_test"]
    rows = []
    stats: Dict[str, Dict[str, list]] = {}
    for variant in ("generalist",) + VARIANTS:
        acc = {"train": [0, 0], "test": [0, 0], "nll": [0.0, 0], "other": [0, 0]}
        for m, s in enumerate(subsets):
            path = _spec_path(args, variant if variant != "generalist" else "dustbin", m)
            if not path.is_file():
                if variant == "generalist":
                    raise FileNotFoundError(f"{path} missing")
                acc = None
                break
            ck = torch.load(path)
            k = len(s)
            sp_idx = ck["logits"]["train_special_index"]
            special = torch.zeros(100, dtype=torch.bool)
            special[s] = True
            local = torch.full((100,), -1, dtype=torch.long)
            local[s] = torch.arange(k)
            te = special[y_te]
            if variant == "generalist":
                z_tr, z_te = lg["train"][sp_idx][:, s], lg["test"][te][:, s]
                full_te = lg["test"]
            elif variant == "dustbin":
                z_tr, z_te = ck["logits"]["train_special"][:, :k], ck["logits"]["test"][te][:, :k]
                full_te = None
            else:
                z_tr, z_te = ck["logits"]["train_special"][:, s], ck["logits"]["test"][te][:, s]
                full_te = ck["logits"]["test"]
            # Accuracy among the special classes, for images of the special classes.
            acc["train"][0] += int((z_tr.argmax(-1) == local[y_tr[sp_idx]]).sum())
            acc["train"][1] += len(sp_idx)
            acc["test"][0] += int((z_te.argmax(-1) == local[y_te[te]]).sum())
            acc["test"][1] += int(te.sum())
            acc["nll"][0] += float(torch.nn.functional.cross_entropy(z_te, local[y_te[te]], reduction="sum"))
            acc["nll"][1] += int(te.sum())
            if full_te is not None:  # full-softmax models: accuracy on the other classes' test images
                acc["other"][0] += int((full_te[~te].argmax(-1) == y_te[~te]).sum())
                acc["other"][1] += int((~te).sum())
        if acc is None:
            log.warning("no %s specialists: skipped", variant)
            continue
        stats[variant] = acc
        tr = 100.0 * acc["train"][0] / acc["train"][1]
        tst = 100.0 * acc["test"][0] / acc["test"][1]
        name = variant if variant == "generalist" else f"specialists-{variant}"
        common = {"command": _command()}
        rows.append({"system": name, "set": "train", "special_accuracy": tr, "images": acc["train"][1], **common})
        rows.append({
            "system": name, "set": "test", "special_accuracy": tst, "images": acc["test"][1],
            "train_minus_test": tr - tst, "special_nll": acc["nll"][0] / acc["nll"][1],
            "other_classes_accuracy": (100.0 * acc["other"][0] / acc["other"][1]) if acc["other"][1] else None,
            **common,
        })
    wall = round(time.time() - t0, 1)
    for r in rows:
        r["wall_s"] = wall
    _update(args, rows, "Section 6.1: specialists overfitting",
                   columns=["system", "set", "special_accuracy", "train_minus_test", "special_nll",
                            "other_classes_accuracy", "images", "wall_s"],
                   notes={"Section 6.1: specialists overfitting": (
                       "Accuracy (%) among each specialist's special classes on images of those classes, summed "
                       "over specialists, on the training images (no augmentation) and the test set; "
                       "train_minus_test measures overfitting, special_nll the test NLL within the special "
                       "classes. dustbin: |S|+1 outputs, hard targets. full-soft: full softmax, hard targets "
                       "among the special classes plus the generalist's soft targets among the others; "
                       "other_classes_accuracy: its top-1 accuracy on test images of the non-special classes "
                       "(the generalist's knowledge it kept). Generalist: its logits restricted to the same classes.")})


def run(args) -> int:
    global _COMMAND
    _COMMAND = _reconstruct_command(args)
    _apply_quick(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    {
        "prepare": step_prepare, "generalist": step_generalist, "cluster": step_cluster,
        "specialists": step_specialists, "combine": step_combine, "overfit": step_overfit,
    }[args.step](args)
    return 0
