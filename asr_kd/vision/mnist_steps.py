"""The paper's MNIST experiments (section 3) as functions, one per recipe stage.

Every step takes a :class:`MnistConfig` (all the recipe's settings and their defaults; the
``asr-kd mnist`` flags are made from its fields), skips its work when its outputs exist unless
``config.force``, and writes its rows to RESULTS.md/results.json in ``config.results_dir``
through :func:`asr_kd.results.update_results`:

- :func:`prepare`: find/verify (or download) the IDX files; writes ``EXP/data.json``.
- :func:`teacher`: 784-1200-1200-10, dropout on input and hidden units, max-norm, 2-pixel jitter;
  saves its logits on train/dev/test (``EXP/teacher/logits.pt``).
- :func:`baseline`: 784-800-800-10, hard labels, no regularisation.
- :func:`distill`: the same 800-800 net on the teacher's soft targets at T=20 plus the hard term.
- :func:`sweep`: 300-300 and 30-30 students over several temperatures (+ a hard-label run each)
  and a PNG of errors vs T (:func:`plot_sweep`).
- :func:`transfer`: students distilled on a transfer set without any 3s, and on 7s and 8s only,
  with the bias-shift correction (chosen on the test set as the paper did, and on the dev set).
- :func:`report`: rewrite the tables' notes with each stage's wall time and the total.
- :func:`run_steps`: several steps in order, sharing the loaded data.

Every model trains on the first ``60000 - valid_size`` training images; the last ``valid_size``
are the dev set used for every choice (never the test set, except the paper's test-optimal bias
shift, reported as such next to the dev-chosen one). The paper's numbers quoted in the tables'
notes are in ``recipes/mnist/paper.json``. ``command`` (written in each row) defaults to this
process's command line.

    from asr_kd.vision.mnist_steps import MnistConfig, run_steps
    run_steps(MnistConfig.quick(mnist_dir="corpora/mnist", exp_dir="exp/quick"), ["teacher", "baseline"])
"""
from __future__ import annotations

import dataclasses
import logging
import time
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from asr_kd.config import argv_command, option, quick_values
from asr_kd.distill import HARD_WEIGHT, tempered_softmax
from asr_kd.results import load_results, update_results
from asr_kd.utils import atomic_path, read_json, write_json
from asr_kd.vision import mnist
from asr_kd.vision.recipe import paper_note
from asr_kd.vision.train import DTYPES, TrainConfig, TrainHistory, count_errors, predict_logits, train_classifier

log = logging.getLogger(__name__)

STEPS = ("prepare", "teacher", "baseline", "distill", "sweep", "transfer", "report")
MAIN_TABLE = "MNIST: teacher, baseline and distilled student"
SWEEP_TABLE = "MNIST: temperature sweep for small students"
TRANSFER_TABLE = "MNIST: transfer sets with classes left out"
COLUMNS = ["system", "set", "errors", "error_rate", "n", "params", "epochs", "temperature", "wall_s"]
SWEEP_COLUMNS = COLUMNS[:4] + ["units"] + COLUMNS[4:]
TRANSFER_COLUMNS = [
    "system", "set", "errors", "error_rate", "n", "errors_on", "bias_shift", "transfer_size", "epochs", "wall_s",
]


def setting(default, help: str, **meta):
    """A recipe setting: recorded in each result.json; ``--quick`` may give it another value."""
    return option(default, help, setting=True, **meta)


@dataclasses.dataclass(frozen=True)
class MnistConfig:
    """The MNIST recipe's settings; the defaults are the full run's (:meth:`quick` for tests)."""

    exp_dir: Path = option(Path("exp"), "models, logits, per-stage results")
    results_dir: Path = option(Path("."), "where RESULTS.md/results.json go")
    mnist_dir: Optional[Path] = option(None, "local directory with the 4 IDX .gz files")
    download_dir: Optional[Path] = option(None, "download the IDX files here if needed "
                                                "(with neither dir: EXP/download)")
    force: bool = option(False, "redo a step even if its outputs exist")
    seed: int = option(0, "seed of every net's initialisation and training")
    device: str = option("cpu", "torch device")
    dtype: str = option("auto", "auto: bf16 only where the hardware runs it natively", choices=DTYPES)
    threads: int = option(0, "torch threads (0: leave torch's default)")
    no_progress: bool = option(False, "no tqdm bars")
    valid_size: int = setting(10000, "last training images held out as the dev set", quick=1000)
    train_limit: Optional[int] = setting(None, "train on the first N of the rest (None: all)", quick=2000)
    test_limit: Optional[int] = setting(None, "test on the first N test images (None: all)", quick=2000)
    batch_size: int = setting(250, "SGD batch size", quick=50)
    lr: float = setting(0.1, "peak learning rate (cosine to 0)")
    momentum: float = setting(0.9, "Nesterov momentum")
    teacher_hidden: Tuple[int, ...] = setting((1200, 1200), "teacher hidden layers", flag=False)
    teacher_epochs: int = setting(60, "teacher epochs", quick=2)
    input_dropout: float = setting(0.1, "teacher dropout on the input pixels")
    hidden_dropout: float = setting(0.3, "teacher dropout on the hidden units")
    max_norm: float = setting(3.5, "teacher max-norm of each unit's incoming weights")
    jitter: int = setting(2, "teacher: max shift in pixels")
    student_hidden: Tuple[int, ...] = setting((800, 800), "baseline / distilled hidden layers", flag=False)
    student_epochs: int = setting(20, "baseline and distilled student epochs", quick=2)
    temperature: float = setting(20.0, "distillation temperature (distill, transfer)")
    hard_weight: float = setting(HARD_WEIGHT, "weight of the hard-label term in distillation")
    # At high T the T^2-scaled soft loss behaves like a squared error on the logits (unbounded
    # gradients) and diverged at lr 0.1 on the dev set; distillation runs clip the gradient norm.
    distill_grad_clip: float = setting(2.0, "gradient-norm clip of distillation runs (hard-label runs: none)")
    sweep_hidden: Tuple[Tuple[int, ...], ...] = setting(((300, 300), (30, 30)), "sweep student sizes", flag=False)
    sweep_temperatures: Tuple[float, ...] = setting(
        (1.0, 2.0, 3.0, 4.0, 8.0, 20.0), "comma-separated sweep temperatures", quick=(2.0, 20.0))
    sweep_epochs: int = setting(10, "epochs of each sweep student", quick=1)
    transfer_epochs: int = setting(20, "epochs of each transfer-set student", quick=2)

    @classmethod
    def quick(cls, **overrides) -> "MnistConfig":
        """The tiny configuration of ``--quick`` (minutes on a CPU); ``overrides`` win."""
        return cls(**{**quick_values(cls), **overrides})

    def settings(self) -> dict:
        """The recipe settings (what each result.json records)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("setting")}

    def train_config(self, epochs: int, desc: str, **kw) -> TrainConfig:
        return TrainConfig(**{
            **dict(epochs=epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum, nesterov=True,
                   lr_schedule="cosine", dtype=self.dtype, seed=self.seed, device=self.device,
                   progress=not self.no_progress, desc=desc),
            **kw,
        })


class MnistData:
    """The train/dev/test tensors of a config, loaded on first use (running :func:`prepare` first
    when ``EXP/data.json`` is missing)."""

    def __init__(self, config: MnistConfig):
        self.config = config

    @cached_property
    def splits(self) -> Dict[str, torch.Tensor]:
        cfg = self.config
        info_path = Path(cfg.exp_dir) / "data.json"
        if not info_path.exists():
            prepare(cfg)
        d = mnist.split_train_valid(mnist.load_mnist(read_json(info_path)["dir"]), cfg.valid_size)
        if cfg.train_limit:
            d["train_x"], d["train_y"] = d["train_x"][: cfg.train_limit], d["train_y"][: cfg.train_limit]
        if cfg.test_limit:
            d["test_x"], d["test_y"] = d["test_x"][: cfg.test_limit], d["test_y"][: cfg.test_limit]
        return d


# -- helpers ------------------------------------------------------------------------------------
def _done(cfg: MnistConfig, path: Path) -> bool:
    if path.exists() and not cfg.force:
        log.info("%s exists: skipping (use --force to redo)", path)
        return True
    return False


def _dev_test_logits(cfg: MnistConfig, d: Dict[str, torch.Tensor], model) -> Dict[str, torch.Tensor]:
    return {k: predict_logits(model, d[f"{k}_x"], device=cfg.device) for k in ("valid", "test")}


def error_rows(system: str, logits: Dict[str, torch.Tensor], d: Dict[str, torch.Tensor], **extra) -> List[dict]:
    """A dev and a test row: errors, error rate (%) and size of each set, then ``extra``."""
    rows = []
    for split, set_name in (("valid", "dev"), ("test", "test")):
        labels = d[f"{split}_y"]
        n = int(labels.shape[0])
        errors = count_errors(logits[split], labels)
        rows.append(dict(system=system, set=set_name, errors=errors, error_rate=100.0 * errors / n, n=n, **extra))
    return rows


def _save_model(model, path: Path, hist: TrainHistory) -> None:
    """The weights, with the net's shape and the training settings beside them as ``config.json``."""
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(path.parent / "config.json", {"model": model.config(), "train": hist.config})


def _teacher_logits_path(cfg: MnistConfig) -> Path:
    path = Path(cfg.exp_dir) / "teacher" / "logits.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run the teacher step first")
    return path


def _train_student(cfg: MnistConfig, d: Dict[str, torch.Tensor], name: str, hidden: Sequence[int], epochs: int,
                   temperature: Optional[float], subset: Optional[torch.Tensor] = None):
    """Train an unregularised student on hard labels (``temperature=None``) or on the teacher's
    soft targets at ``temperature`` plus the weighted hard term; returns (model, history)."""
    x, y = d["train_x"], d["train_y"]
    soft = None
    if temperature is not None:
        soft = tempered_softmax(torch.load(_teacher_logits_path(cfg))["train"], temperature)
    if subset is not None:
        x, y = x[subset], y[subset]
        soft = soft[subset] if soft is not None else None
    torch.manual_seed(cfg.seed)
    model = mnist.mlp(hidden)
    train_cfg = cfg.train_config(
        epochs, name, temperature=temperature or 1.0, hard_weight=cfg.hard_weight, soft_weight=1.0,
        grad_clip=cfg.distill_grad_clip if temperature is not None else None,
    )
    hist = train_classifier(model, x, y, train_cfg, soft_targets=soft, eval_fn=_dev_errors_fn(cfg, d))
    return model, hist


def _dev_errors_fn(cfg: MnistConfig, d: Dict[str, torch.Tensor]):
    def dev_errors(model, epoch):
        return {"dev_errors": count_errors(predict_logits(model, d["valid_x"], device=cfg.device), d["valid_y"])}

    return dev_errors


def settings_text(cfg: MnistConfig) -> str:
    return (
        f"SGD (Nesterov momentum {cfg.momentum}, batch {cfg.batch_size}, lr {cfg.lr} cosine to 0); teacher "
        f"{cfg.teacher_epochs} epochs, dropout {cfg.input_dropout} input / {cfg.hidden_dropout} hidden, "
        f"max-norm {cfg.max_norm}, jitter up to {cfg.jitter} px; students {cfg.student_epochs} epochs, "
        f"distillation loss T^2 * CE(soft) + {cfg.hard_weight} * CE(hard) with the gradient norm clipped at "
        f"{cfg.distill_grad_clip} (hard-label runs: no clipping)"
    )


def table_note(cfg: MnistConfig, data: MnistData, table: str, extra: str = "") -> str:
    """The note under ``table`` in RESULTS.md: the paper's numbers (recipes/mnist/paper.json), our
    settings, and ``extra``."""
    if table == MAIN_TABLE:
        d = data.splits
        text = paper_note("mnist", "main", n_train=len(d["train_y"]), n_valid=len(d["valid_y"]),
                          settings=settings_text(cfg))
    else:
        text = paper_note("mnist", {SWEEP_TABLE: "sweep", TRANSFER_TABLE: "transfer"}[table])
    return f"{text} {extra}" if extra else text


def _write(cfg: MnistConfig, data: MnistData, table: str, rows: List[dict], hist: Optional[TrainHistory],
           out: Path, columns: Sequence[str]) -> List[dict]:
    """The rows into RESULTS.md/results.json, and with the settings and history into ``out``."""
    update_results(cfg.results_dir, rows, table, notes={table: table_note(cfg, data, table)}, columns=columns)
    payload = {"rows": rows, "settings": cfg.settings()}
    if hist is not None:
        payload["history"] = hist.epochs
    write_json(out, payload)
    for r in rows:
        log.info("%s %s: %d errors (%.2f%%)", r["system"], r["set"], r["errors"], r["error_rate"])
    return rows


# -- steps --------------------------------------------------------------------------------------
def prepare(cfg: MnistConfig) -> Optional[Path]:
    """Verify (or download) the four IDX files; their directory is recorded in ``EXP/data.json``."""
    out = Path(cfg.exp_dir) / "data.json"
    if _done(cfg, out):
        return None
    download_dir = cfg.download_dir
    if cfg.mnist_dir is None and download_dir is None:
        download_dir = Path(cfg.exp_dir) / "download"
    directory = mnist.prepare_mnist(cfg.mnist_dir, download_dir)
    d = mnist.load_mnist(directory)
    write_json(out, {"dir": str(Path(directory).resolve()), "train": len(d["train_y"]), "test": len(d["test_y"])})
    log.info("MNIST ready in %s: %d train, %d test images", directory, len(d["train_y"]), len(d["test_y"]))
    return Path(directory)


def teacher(cfg: MnistConfig, data: Optional[MnistData] = None, command: Optional[str] = None) -> Optional[List[dict]]:
    """Train the regularised teacher; save it and its logits on train/dev/test; its dev/test rows."""
    exp = Path(cfg.exp_dir) / "teacher"
    out = exp / "result.json"
    if _done(cfg, out):
        return None
    data = data or MnistData(cfg)
    d = data.splits
    torch.manual_seed(cfg.seed)
    model = mnist.mlp(cfg.teacher_hidden, cfg.input_dropout, cfg.hidden_dropout)
    train_cfg = cfg.train_config(cfg.teacher_epochs, "teacher", max_norm=cfg.max_norm)
    # The teacher is the long run: a checkpoint per epoch lets an interrupted run resume.
    checkpoint = exp / "checkpoint.pt"
    if cfg.force:
        checkpoint.unlink(missing_ok=True)
    hist = train_classifier(model, d["train_x"], d["train_y"], train_cfg, augment=mnist.Jitter(cfg.jitter),
                            eval_fn=_dev_errors_fn(cfg, d), checkpoint=checkpoint)
    t_trained = time.time()
    _save_model(model, exp / "model.pt", hist)
    logits = {k: predict_logits(model, d[f"{k}_x"], device=cfg.device) for k in ("train", "valid", "test")}
    with atomic_path(exp / "logits.pt") as tmp:
        torch.save(logits, tmp)
    # hist.wall_s counts the epochs trained before an interruption too (a resumed run).
    wall = hist.wall_s + time.time() - t_trained
    rows = error_rows("teacher", logits, d, params=mnist.num_parameters(model), epochs=cfg.teacher_epochs,
                      temperature=None, wall_s=round(wall, 1), command=command or argv_command())
    return _write(cfg, data, MAIN_TABLE, rows, hist, out, COLUMNS)


def _student(cfg: MnistConfig, data: Optional[MnistData], system: str, temperature: Optional[float],
             command: Optional[str]) -> Optional[List[dict]]:
    out = Path(cfg.exp_dir) / system / "result.json"
    if _done(cfg, out):
        return None
    if temperature is not None:
        _teacher_logits_path(cfg)
    data = data or MnistData(cfg)
    d = data.splits
    t0 = time.time()
    model, hist = _train_student(cfg, d, system, cfg.student_hidden, cfg.student_epochs, temperature)
    _save_model(model, Path(cfg.exp_dir) / system / "model.pt", hist)
    rows = error_rows(system, _dev_test_logits(cfg, d, model), d, params=mnist.num_parameters(model),
                      epochs=hist.epochs[-1]["epoch"] if hist.epochs else 0, temperature=temperature,
                      wall_s=round(time.time() - t0, 1), command=command or argv_command())
    return _write(cfg, data, MAIN_TABLE, rows, hist, out, COLUMNS)


def baseline(cfg: MnistConfig, data: Optional[MnistData] = None, command: Optional[str] = None) -> Optional[List[dict]]:
    """The 800-800 student on hard labels, no regularisation; its dev/test rows."""
    return _student(cfg, data, "baseline", None, command)


def distill(cfg: MnistConfig, data: Optional[MnistData] = None, command: Optional[str] = None) -> Optional[List[dict]]:
    """The 800-800 student on the teacher's soft targets at ``cfg.temperature``; its dev/test rows."""
    return _student(cfg, data, f"distilled-T{cfg.temperature:g}", cfg.temperature, command)


def sweep(cfg: MnistConfig, data: Optional[MnistData] = None, command: Optional[str] = None) -> List[dict]:
    """Each sweep size on hard labels and at each sweep temperature; the rows of the runs made."""
    _teacher_logits_path(cfg)
    data = data or MnistData(cfg)
    written = []
    for hidden in cfg.sweep_hidden:
        units = hidden[0]
        for T in [None, *cfg.sweep_temperatures]:
            system = f"sweep-{units}-" + ("hard" if T is None else f"T{T:g}")
            out = Path(cfg.exp_dir) / "sweep" / system / "result.json"
            if _done(cfg, out):
                continue
            d = data.splits
            t0 = time.time()
            model, hist = _train_student(cfg, d, system, hidden, cfg.sweep_epochs, T)
            rows = error_rows(system, _dev_test_logits(cfg, d, model), d, params=mnist.num_parameters(model),
                              epochs=cfg.sweep_epochs, temperature=T, wall_s=round(time.time() - t0, 1),
                              command=command or argv_command())
            for r in rows:
                r["units"] = units
            written += _write(cfg, data, SWEEP_TABLE, rows, hist, out, SWEEP_COLUMNS)
    plot_sweep(cfg, data)
    return written


def _sweep_errors(path: Path, set_name: str) -> Optional[int]:
    if not path.exists():
        return None
    return next(r for r in read_json(path)["rows"] if r["set"] == set_name)["errors"]


def plot_sweep(cfg: MnistConfig, data: Optional[MnistData] = None) -> Optional[Path]:
    """errors vs T for each student size (test and dev), saved next to RESULTS.md as sweep.png."""
    # matplotlib is an optional dependency (the "plot" extra): imported here so that the steps
    # run without it, only the plot is then skipped.
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is installed with the plot extra
        log.warning("matplotlib missing: no sweep plot")
        return None
    d = (data or MnistData(cfg)).splits
    sweep_dir = Path(cfg.exp_dir) / "sweep"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, hidden in enumerate(cfg.sweep_hidden):
        units = hidden[0]
        color = colors[k % len(colors)]
        for set_name, style in (("test", "-o"), ("dev", "--x")):
            points = [(T, _sweep_errors(sweep_dir / f"sweep-{units}-T{T:g}" / "result.json", set_name))
                      for T in cfg.sweep_temperatures]
            points = [(T, e) for T, e in points if e is not None]
            hard = _sweep_errors(sweep_dir / f"sweep-{units}-hard" / "result.json", set_name)
            if points:
                ax.plot([t for t, _ in points], [e for _, e in points], style, color=color,
                        label=f"{units}-{units} {set_name}")
                if hard is not None:
                    ax.axhline(hard, color=color, linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xticks(list(cfg.sweep_temperatures))
    ax.set_xticklabels([f"{t:g}" for t in cfg.sweep_temperatures])
    ax.minorticks_off()
    ax.set_xlabel("temperature T")
    ax.set_ylabel("errors (of %d test / %d dev)" % (len(d["test_y"]), len(d["valid_y"])))
    ax.set_title("Distilled MNIST students vs temperature (dotted: hard labels)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(cfg.results_dir) / "sweep.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    log.info("wrote %s", out)
    return out


def _transfer_row(system: str, set_name: str, logits: torch.Tensor, labels: torch.Tensor, classes: List[int],
                  shift: float, **extra) -> dict:
    """Errors with ``shift`` added to the logits of ``classes``, overall and on those classes."""
    if shift:
        logits = logits.clone()
        logits[:, classes] += shift
    pred = logits.argmax(-1)
    on_classes = torch.isin(labels, torch.tensor(classes))
    n = int(labels.shape[0])
    errors = count_errors(pred, labels)
    names = ",".join(str(c) for c in classes)
    return dict(
        system=system, set=set_name, errors=errors, error_rate=100.0 * errors / n, n=n,
        errors_on=f"{count_errors(pred[on_classes], labels[on_classes])} of {int(on_classes.sum())} {names}s",
        bias_shift=shift, **extra,
    )


def transfer(cfg: MnistConfig, data: Optional[MnistData] = None, command: Optional[str] = None) -> List[dict]:
    """Students distilled on transfer sets without 3s / with only 7s and 8s, with and without the
    bias shift of the left-out classes (test-optimal: the paper's oracle; dev-chosen: honest)."""
    _teacher_logits_path(cfg)
    data = data or MnistData(cfg)
    written = []
    for system, kept, shifted in (("no3", None, [3]), ("only78", [7, 8], [7, 8])):
        out = Path(cfg.exp_dir) / "transfer" / system / "result.json"
        if _done(cfg, out):
            continue
        d = data.splits
        t0 = time.time()
        y = d["train_y"]
        mask = (y != 3) if kept is None else torch.isin(y, torch.tensor(kept))
        subset = mask.nonzero().squeeze(1)
        model, hist = _train_student(cfg, d, system, cfg.student_hidden, cfg.transfer_epochs, cfg.temperature,
                                     subset=subset)
        logits = _dev_test_logits(cfg, d, model)
        columns = dict(transfer_size=int(subset.numel()), epochs=cfg.transfer_epochs,
                       wall_s=round(time.time() - t0, 1), command=command or argv_command())
        dev = (logits["valid"], d["valid_y"])
        test = (logits["test"], d["test_y"])
        dev_shift, _ = mnist.best_bias_shift(*dev, shifted)
        test_shift, _ = mnist.best_bias_shift(*test, shifted)
        rows = [
            _transfer_row(system, "dev", *dev, shifted, 0.0, **columns),
            _transfer_row(system, "test", *test, shifted, 0.0, **columns),
            _transfer_row(f"{system}-bias", "test", *test, shifted, test_shift, **columns),
            _transfer_row(f"{system}-bias-dev", "dev", *dev, shifted, dev_shift, **columns),
            _transfer_row(f"{system}-bias-dev", "test", *test, shifted, dev_shift, **columns),
        ]
        _save_model(model, Path(cfg.exp_dir) / "transfer" / system / "model.pt", hist)
        written += _write(cfg, data, TRANSFER_TABLE, rows, hist, out, TRANSFER_COLUMNS)
    return written


def stage_walls(exp: Path) -> Dict[str, float]:
    """Wall seconds of each finished stage, summed over its runs (from ``exp/*/result.json``)."""
    exp = Path(exp)
    groups = {
        "teacher": [exp / "teacher"], "baseline": [exp / "baseline"], "distill": list(exp.glob("distilled-T*")),
        "sweep": list((exp / "sweep").glob("*")), "transfer": list((exp / "transfer").glob("*")),
    }
    walls: Dict[str, float] = {}
    for stage, dirs in groups.items():
        results = [p / "result.json" for p in dirs if (p / "result.json").exists()]
        if results:
            walls[stage] = round(sum(float(read_json(p)["rows"][0]["wall_s"]) for p in results), 1)
    return walls


def report(cfg: MnistConfig, data: Optional[MnistData] = None) -> Dict[str, float]:
    """Rewrite the notes of the tables present, the main one with the stage wall times; returns them."""
    data = data or MnistData(cfg)
    walls = stage_walls(Path(cfg.exp_dir))
    extra = ""
    if walls:
        total = sum(walls.values())
        extra = (
            "Stage wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
            + f"; total {total:.0f} s ({total / 60:.1f} min) on this machine."
        )
    tables = {r.get("table") for r in load_results(cfg.results_dir)["rows"]}
    for table in (MAIN_TABLE, SWEEP_TABLE, TRANSFER_TABLE):
        if table in tables:
            note = table_note(cfg, data, table, extra if table == MAIN_TABLE else "")
            update_results(cfg.results_dir, [], table, notes={table: note})
    log.info("notes refreshed in %s; %s", Path(cfg.results_dir) / "RESULTS.md", extra or "no stage finished yet")
    return walls


def run_steps(cfg: MnistConfig, steps: Sequence[str] = STEPS, command: Optional[str] = None) -> None:
    """Run ``steps`` (names in :data:`STEPS`) in the order given, loading the data once."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    unknown = [name for name in steps if name not in STEPS]
    if unknown:
        raise ValueError(f"unknown MNIST steps {unknown}; choose from {STEPS}")
    data = MnistData(cfg)
    command = command or argv_command()
    trainers = {"teacher": teacher, "baseline": baseline, "distill": distill, "sweep": sweep, "transfer": transfer}
    for name in steps:
        t0 = time.time()
        log.info("mnist %s ...", name)
        if name == "prepare":
            prepare(cfg)
        elif name == "report":
            report(cfg, data)
        else:
            trainers[name](cfg, data, command)
        log.info("mnist %s done in %.1f s", name, time.time() - t0)
