"""``asr-kd mnist <step>``: the paper's MNIST experiments (section 3), one step per recipe stage.

Steps (each skips its work when its outputs exist, unless ``--force``):

- ``prepare``: find/verify (or download) the IDX files; writes ``EXP/data.json``.
- ``teacher``: 784-1200-1200-10, dropout on input and hidden units, max-norm, 2-pixel jitter;
  saves its logits on train/dev/test (``EXP/teacher/logits.pt``).
- ``baseline``: 784-800-800-10, hard labels, no regularisation.
- ``distill``: the same 800-800 net on the teacher's soft targets at T=20 plus the hard term.
- ``sweep``: 300-300 and 30-30 students over several temperatures (+ a hard-label run each) and
  a PNG of errors vs T.
- ``transfer``: students distilled on a transfer set without any 3s, and on 7s and 8s only, with
  the bias-shift correction (chosen on the test set as the paper did, and on the dev set).
- ``report``: rewrite the tables' notes with each stage's wall time and the total.

Every model trains on the first ``60000 - valid_size`` training images; the last ``valid_size``
are the dev set used for every choice (never the test set, except the paper's test-optimal bias
shift, reported as such next to the dev-chosen one). Results go to RESULTS.md/results.json in
``--results-dir`` through :func:`asr_kd.results.update_results`.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from asr_kd.distill import tempered_softmax
from asr_kd.results import update_results
from asr_kd.utils import atomic_path, read_json, write_json
from asr_kd.vision import mnist as M
from asr_kd.vision.train import TrainConfig, count_errors, predict_logits, train_classifier

log = logging.getLogger(__name__)

STEPS = ("prepare", "teacher", "baseline", "distill", "sweep", "transfer", "report", "all")

# Settings of the full run and of --quick (tests, smoke runs). CLI flags override them.
FULL = dict(
    valid_size=10000,
    train_limit=None,
    test_limit=None,
    batch_size=250,
    lr=0.1,
    momentum=0.9,
    teacher_hidden=[1200, 1200],
    teacher_epochs=60,
    input_dropout=0.1,
    hidden_dropout=0.3,
    max_norm=3.5,
    jitter=2,
    student_hidden=[800, 800],
    student_epochs=20,
    temperature=20.0,
    hard_weight=0.5,
    # At high T the T^2-scaled soft loss behaves like a squared error on the logits (unbounded
    # gradients) and diverged at lr 0.1 on the dev set; distillation runs clip the gradient norm.
    distill_grad_clip=2.0,
    sweep_hidden=[[300, 300], [30, 30]],
    sweep_temperatures=[1.0, 2.0, 3.0, 4.0, 8.0, 20.0],
    sweep_epochs=10,
    transfer_epochs=20,
)
QUICK = dict(
    FULL,
    valid_size=1000,
    train_limit=2000,
    test_limit=2000,
    batch_size=50,
    teacher_epochs=2,
    student_epochs=2,
    sweep_temperatures=[2.0, 20.0],
    sweep_epochs=1,
    transfer_epochs=2,
)

PAPER_MAIN = (
    "Paper (Hinton, Vinyals & Dean 2015, section 3), test errors out of 10,000: teacher 1200-1200 with "
    "dropout, max-norm and jitter 67; baseline 800-800 (hard labels, no regularisation) 146; 800-800 "
    "distilled at T=20: 74. The paper trained on all 60,000 images for far longer; here every net trains "
    "on the first {n_train} training images (the last {n_valid} are the dev set) for the epochs shown, "
    "on a shared 2-core CPU."
)
PAPER_SWEEP = (
    "Paper: with 300 or more units per hidden layer all temperatures above 8 gave fairly similar results; "
    "with 30 units per layer temperatures from 2.5 to 4 worked significantly better than higher or lower "
    "ones. `hard` = trained on hard labels only. Plot: ![test errors vs T](sweep.png)"
)
PAPER_TRANSFER = (
    "Paper: transfer set without any 3s: 206 test errors, 133 of them on the 1010 test 3s; adding 3.5 to "
    "the bias of the 3 gives 109 errors, 14 on 3s. Transfer set of only 7s and 8s: 47.3% test errors; "
    "lowering the 7 and 8 biases by 7.6 gives 13.2%. As in the paper, `-bias` rows use the shift that "
    "minimises the *test* errors (an oracle); `-bias-dev` rows use the shift chosen on the dev set and are "
    "the honest numbers."
)
T_MAIN = "MNIST: teacher, baseline and distilled student"
T_SWEEP = "MNIST: temperature sweep for small students"
T_TRANSFER = "MNIST: transfer sets with classes left out"
COLUMNS = ["system", "set", "errors", "error_rate", "n", "params", "epochs", "temperature", "wall_s"]
TRANSFER_COLUMNS = [
    "system", "set", "errors", "error_rate", "n", "errors_on", "bias_shift", "transfer_size", "epochs", "wall_s",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("step", choices=STEPS, help="which experiment to run")
    parser.add_argument("--exp-dir", type=Path, default=Path("exp"), help="models, logits, per-stage results")
    parser.add_argument("--results-dir", type=Path, default=Path("."), help="where RESULTS.md/results.json go")
    parser.add_argument("--mnist-dir", type=Path, default=None, help="local directory with the 4 IDX .gz files")
    parser.add_argument("--download-dir", type=Path, default=None, help="download the IDX files here if needed")
    parser.add_argument("--quick", action="store_true", help="tiny subset and few epochs (minutes)")
    parser.add_argument("--force", action="store_true", help="redo a step even if its outputs exist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    for key in (
        "valid_size", "train_limit", "test_limit", "batch_size", "teacher_epochs", "student_epochs",
        "sweep_epochs", "transfer_epochs",
    ):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None, help=f"override {key}")
    for key in (
        "lr", "momentum", "input_dropout", "hidden_dropout", "max_norm", "temperature", "hard_weight",
        "distill_grad_clip",
    ):
        parser.add_argument("--" + key.replace("_", "-"), type=float, default=None, help=f"override {key}")
    parser.add_argument("--jitter", type=int, default=None, help="max shift in pixels (override)")
    parser.add_argument(
        "--sweep-temperatures", type=str, default=None, help="comma-separated temperatures (override)"
    )


def settings(args) -> dict:
    s = dict(QUICK if args.quick else FULL)
    for k in list(s):
        v = getattr(args, k, None)
        if v is not None:
            s[k] = [float(t) for t in v.split(",")] if k == "sweep_temperatures" else v
    return s


def _command(args) -> str:
    """The ``asr-kd mnist ...`` command line equivalent to ``args`` (non-default options only)."""
    parser = getattr(args, "_parser", None)
    if parser is None:
        return "asr-kd " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    words = ["asr-kd", "mnist", args.step]
    for action in parser._actions:
        dest = action.dest
        if not action.option_strings or dest.startswith("_") or dest in ("help", "step"):
            continue
        value = getattr(args, dest, None)
        if value == action.default or value is None:
            continue
        opt = action.option_strings[-1]
        words += [opt] if isinstance(value, bool) else [opt, str(value)]
    return " ".join(shlex.quote(w) for w in words)


class Context:
    """What every step needs: settings, data splits, paths and the training config factory."""

    def __init__(self, args):
        self.args = args
        self.s = settings(args)
        self.exp = Path(args.exp_dir)
        self.results_dir = Path(args.results_dir)
        self.command = _command(args)
        self._data = None

    # -- data ---------------------------------------------------------------------------------
    @property
    def data(self) -> Dict[str, torch.Tensor]:
        if self._data is None:
            info_path = self.exp / "data.json"
            if not info_path.exists():
                prepare(self)
            d = M.load_mnist(read_json(info_path)["dir"])
            d = M.split_train_valid(d, self.s["valid_size"])
            if self.s["train_limit"]:
                d["train_x"], d["train_y"] = d["train_x"][: self.s["train_limit"]], d["train_y"][: self.s["train_limit"]]
            if self.s["test_limit"]:
                d["test_x"], d["test_y"] = d["test_x"][: self.s["test_limit"]], d["test_y"][: self.s["test_limit"]]
            self._data = d
        return self._data

    def train_config(self, epochs: int, desc: str, **kw) -> TrainConfig:
        base = dict(
            epochs=epochs,
            batch_size=self.s["batch_size"],
            lr=self.s["lr"],
            momentum=self.s["momentum"],
            nesterov=True,
            lr_schedule="cosine",
            precision=self.args.precision,
            seed=self.args.seed,
            device=self.args.device,
            progress=not self.args.no_progress,
            desc=desc,
        )
        base.update(kw)
        return TrainConfig(**base)

    def eval_fn(self):
        d = self.data

        def fn(model, epoch):
            z = predict_logits(model, d["valid_x"], device=self.args.device)
            return {"dev_errors": count_errors(z, d["valid_y"])}

        return fn

    def done(self, path: Path) -> bool:
        if path.exists() and not self.args.force:
            log.info("%s exists: skipping (use --force to redo)", path)
            return True
        return False


def _rows(system: str, logits: Dict[str, torch.Tensor], labels: Dict[str, torch.Tensor], **extra) -> List[dict]:
    rows = []
    for split, set_name in (("valid", "dev"), ("test", "test")):
        n = int(labels[split].shape[0])
        e = count_errors(logits[split], labels[split])
        rows.append(dict(system=system, set=set_name, errors=e, error_rate=100.0 * e / n, n=n, **extra))
    return rows


def _save_model(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


def _all_logits(ctx: Context, model) -> Dict[str, torch.Tensor]:
    d = ctx.data
    return {k: predict_logits(model, d[f"{k}_x"], device=ctx.args.device) for k in ("train", "valid", "test")}


def _train_student(
    ctx: Context,
    name: str,
    hidden: Sequence[int],
    epochs: int,
    temperature: Optional[float],
    subset: Optional[torch.Tensor] = None,
):
    """Train an unregularised student on hard labels (``temperature=None``) or on the teacher's
    soft targets at ``temperature`` plus the weighted hard term; returns (model, history)."""
    d = ctx.data
    x, y = d["train_x"], d["train_y"]
    soft = None
    if temperature is not None:
        teacher_logits = torch.load(ctx.exp / "teacher" / "logits.pt")["train"]
        soft = tempered_softmax(teacher_logits, temperature)
    if subset is not None:
        x, y = x[subset], y[subset]
        soft = soft[subset] if soft is not None else None
    torch.manual_seed(ctx.args.seed)
    model = M.mlp(hidden)
    cfg = ctx.train_config(
        epochs, name, temperature=temperature or 1.0, hard_weight=ctx.s["hard_weight"], soft_weight=1.0,
        grad_clip=ctx.s["distill_grad_clip"] if temperature is not None else None,
    )
    hist = train_classifier(model, x, y, cfg, soft_targets=soft, eval_fn=ctx.eval_fn())
    return model, hist


# -- steps ------------------------------------------------------------------------------------
def prepare(ctx: Context) -> None:
    out = ctx.exp / "data.json"
    if ctx.done(out):
        return
    a = ctx.args
    download_dir = a.download_dir
    if a.mnist_dir is None and download_dir is None:
        download_dir = ctx.exp / "download"
    directory = M.prepare_mnist(a.mnist_dir, download_dir)
    d = M.load_mnist(directory)
    write_json(out, {"dir": str(Path(directory).resolve()), "train": len(d["train_y"]), "test": len(d["test_y"])})
    log.info("MNIST ready in %s: %d train, %d test images", directory, len(d["train_y"]), len(d["test_y"]))


def teacher(ctx: Context) -> None:
    out = ctx.exp / "teacher" / "result.json"
    if ctx.done(out):
        return
    s, d = ctx.s, ctx.data
    torch.manual_seed(ctx.args.seed)
    model = M.mlp(s["teacher_hidden"], s["input_dropout"], s["hidden_dropout"])
    cfg = ctx.train_config(s["teacher_epochs"], "teacher", max_norm=s["max_norm"])
    # The teacher is the long run: a checkpoint per epoch lets an interrupted run resume.
    checkpoint = ctx.exp / "teacher" / "checkpoint.pt"
    if ctx.args.force:
        checkpoint.unlink(missing_ok=True)
    hist = train_classifier(
        model, d["train_x"], d["train_y"], cfg, augment=M.Jitter(s["jitter"]), eval_fn=ctx.eval_fn(),
        checkpoint=checkpoint,
    )
    t_trained = time.time()
    _save_model(model, ctx.exp / "teacher" / "model.pt")
    logits = _all_logits(ctx, model)
    with atomic_path(ctx.exp / "teacher" / "logits.pt") as tmp:
        torch.save(logits, tmp)
    # hist.wall_s counts the epochs trained before an interruption too (a resumed run).
    wall = hist.wall_s + time.time() - t_trained
    rows = _rows(
        "teacher", logits, {k: d[f"{k}_y"] for k in ("valid", "test")},
        params=M.num_parameters(model), epochs=s["teacher_epochs"], temperature=None, wall_s=round(wall, 1),
        command=ctx.command,
    )
    _report(ctx, T_MAIN, rows, hist, out)


COMMANDS_NOTE = "Commands run in `recipes/mnist/` (`./run.sh` runs them all)."


def _note(ctx: Context, table: str, extra: str = "") -> str:
    if table == T_MAIN:
        text = PAPER_MAIN.format(n_train=len(ctx.data["train_y"]), n_valid=len(ctx.data["valid_y"]))
        text += f" Settings: {_settings_text(ctx.s)}."
    else:
        text = {T_SWEEP: PAPER_SWEEP, T_TRANSFER: PAPER_TRANSFER}[table]
    return " ".join(t for t in (text, COMMANDS_NOTE, extra) if t)


def _report(ctx: Context, table: str, rows: List[dict], hist, out: Path, notes: Optional[dict] = None,
            columns=None) -> None:
    update_results(ctx.results_dir, rows, table, notes={table: _note(ctx, table)}, columns=columns or COLUMNS)
    payload = {"rows": rows, "settings": ctx.s}
    if hist is not None:
        payload["history"] = hist.epochs
    write_json(out, payload)
    for r in rows:
        log.info("%s %s: %d errors (%.2f%%)", r["system"], r["set"], r["errors"], r["error_rate"])


def stage_walls(exp: Path) -> Dict[str, float]:
    """Wall seconds of each finished stage, summed over its runs (from ``exp/*/result.json``)."""
    walls: Dict[str, float] = {}
    groups = {
        "teacher": ["teacher"], "baseline": ["baseline"], "distill": [p.name for p in exp.glob("distilled-T*")],
        "sweep": [f"sweep/{p.name}" for p in (exp / "sweep").glob("*")],
        "transfer": [f"transfer/{p.name}" for p in (exp / "transfer").glob("*")],
    }
    for stage, dirs in groups.items():
        total, found = 0.0, False
        for d in dirs:
            p = exp / d / "result.json"
            if p.exists():
                total += float(read_json(p)["rows"][0]["wall_s"])
                found = True
        if found:
            walls[stage] = round(total, 1)
    return walls


def report(ctx: Context) -> None:
    walls = stage_walls(ctx.exp)
    extra = ""
    if walls:
        total = sum(walls.values())
        extra = (
            "Stage wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items())
            + f"; total {total:.0f} s ({total / 60:.1f} min) on this machine."
        )
    results_path = ctx.results_dir / "results.json"
    tables = {r.get("table") for r in read_json(results_path)["rows"]} if results_path.exists() else set()
    for table in (T_MAIN, T_SWEEP, T_TRANSFER):
        if table in tables:
            update_results(ctx.results_dir, [], table, notes={table: _note(ctx, table, extra if table == T_MAIN else "")})
    log.info("notes refreshed in %s; %s", ctx.results_dir / "RESULTS.md", extra or "no stage finished yet")


def _settings_text(s: dict) -> str:
    return (
        f"SGD (Nesterov momentum {s['momentum']}, batch {s['batch_size']}, lr {s['lr']} cosine to 0); teacher "
        f"{s['teacher_epochs']} epochs, dropout {s['input_dropout']} input / {s['hidden_dropout']} hidden, "
        f"max-norm {s['max_norm']}, jitter up to {s['jitter']} px; students {s['student_epochs']} epochs, "
        f"distillation loss T^2 * CE(soft) + {s['hard_weight']} * CE(hard) with the gradient norm clipped at "
        f"{s['distill_grad_clip']} (hard-label runs: no clipping)"
    )


def baseline(ctx: Context) -> None:
    out = ctx.exp / "baseline" / "result.json"
    if ctx.done(out):
        return
    t0 = time.time()
    model, hist = _train_student(ctx, "baseline", ctx.s["student_hidden"], ctx.s["student_epochs"], None)
    _save_model(model, ctx.exp / "baseline" / "model.pt")
    _finish_student(ctx, "baseline", model, hist, out, t0, None)


def _finish_student(ctx, system, model, hist, out, t0, temperature) -> None:
    d = ctx.data
    logits = {k: predict_logits(model, d[f"{k}_x"], device=ctx.args.device) for k in ("valid", "test")}
    rows = _rows(
        system, logits, {k: d[f"{k}_y"] for k in ("valid", "test")},
        params=M.num_parameters(model), epochs=hist.epochs[-1]["epoch"] if hist.epochs else 0,
        temperature=temperature, wall_s=round(time.time() - t0, 1), command=ctx.command,
    )
    _report(ctx, T_MAIN, rows, hist, out)


def distill(ctx: Context) -> None:
    T = ctx.s["temperature"]
    system = f"distilled-T{T:g}"
    out = ctx.exp / system / "result.json"
    if ctx.done(out):
        return
    _need_teacher(ctx)
    t0 = time.time()
    model, hist = _train_student(ctx, system, ctx.s["student_hidden"], ctx.s["student_epochs"], T)
    _save_model(model, ctx.exp / system / "model.pt")
    _finish_student(ctx, system, model, hist, out, t0, T)


def _need_teacher(ctx: Context) -> None:
    if not (ctx.exp / "teacher" / "logits.pt").exists():
        raise FileNotFoundError(f"{ctx.exp / 'teacher' / 'logits.pt'} missing: run the teacher step first")


def sweep(ctx: Context) -> None:
    _need_teacher(ctx)
    s, d = ctx.s, ctx.data
    for hidden in s["sweep_hidden"]:
        units = hidden[0]
        for T in [None] + list(s["sweep_temperatures"]):
            system = f"sweep-{units}-" + ("hard" if T is None else f"T{T:g}")
            out = ctx.exp / "sweep" / system / "result.json"
            if ctx.done(out):
                continue
            t0 = time.time()
            model, hist = _train_student(ctx, system, hidden, s["sweep_epochs"], T)
            logits = {k: predict_logits(model, d[f"{k}_x"], device=ctx.args.device) for k in ("valid", "test")}
            rows = _rows(
                system, logits, {k: d[f"{k}_y"] for k in ("valid", "test")},
                params=M.num_parameters(model), epochs=s["sweep_epochs"], temperature=T,
                wall_s=round(time.time() - t0, 1), command=ctx.command,
            )
            for r in rows:
                r["units"] = units
            _report(ctx, T_SWEEP, rows, hist, out, columns=COLUMNS[:4] + ["units"] + COLUMNS[4:])
    plot_sweep(ctx)


def plot_sweep(ctx: Context) -> Optional[Path]:
    """errors vs T for each student size (test and dev), saved next to RESULTS.md as sweep.png."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is installed with the plot extra
        log.warning("matplotlib missing: no sweep plot")
        return None
    s = ctx.s
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, hidden in enumerate(s["sweep_hidden"]):
        units = hidden[0]
        color = colors[k % len(colors)]
        for set_name, style in (("test", "-o"), ("dev", "--x")):
            pts, hard = [], None
            for T in s["sweep_temperatures"]:
                p = ctx.exp / "sweep" / f"sweep-{units}-T{T:g}" / "result.json"
                if p.exists():
                    r = [r for r in read_json(p)["rows"] if r["set"] == set_name][0]
                    pts.append((T, r["errors"]))
            p = ctx.exp / "sweep" / f"sweep-{units}-hard" / "result.json"
            if p.exists():
                hard = [r for r in read_json(p)["rows"] if r["set"] == set_name][0]["errors"]
            if pts:
                ax.plot([t for t, _ in pts], [e for _, e in pts], style, color=color,
                        label=f"{units}-{units} {set_name}")
                if hard is not None:
                    ax.axhline(hard, color=color, linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xticks(list(s["sweep_temperatures"]))
    ax.set_xticklabels([f"{t:g}" for t in s["sweep_temperatures"]])
    ax.minorticks_off()
    ax.set_xlabel("temperature T")
    ax.set_ylabel("errors (of %d test / %d dev)" % (len(ctx.data["test_y"]), len(ctx.data["valid_y"])))
    ax.set_title("Distilled MNIST students vs temperature (dotted: hard labels)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = ctx.results_dir / "sweep.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    log.info("wrote %s", out)
    return out


def transfer(ctx: Context) -> None:
    _need_teacher(ctx)
    s, d = ctx.s, ctx.data
    T = s["temperature"]
    for system, kept, shifted in (("no3", None, [3]), ("only78", [7, 8], [7, 8])):
        out = ctx.exp / "transfer" / system / "result.json"
        if ctx.done(out):
            continue
        t0 = time.time()
        y = d["train_y"]
        mask = (y != 3) if kept is None else (y == kept[0]) | (y == kept[1])
        subset = mask.nonzero().squeeze(1)
        model, hist = _train_student(ctx, system, s["student_hidden"], s["transfer_epochs"], T, subset=subset)
        logits = {k: predict_logits(model, d[f"{k}_x"], device=ctx.args.device) for k in ("valid", "test")}
        labels = {k: d[f"{k}_y"] for k in ("valid", "test")}
        wall = round(time.time() - t0, 1)
        on = ",".join(str(c) for c in shifted)

        def row(name, set_name, shift):
            z = logits["valid" if set_name == "dev" else "test"]
            lab = labels["valid" if set_name == "dev" else "test"]
            if shift:
                z = z.clone()
                z[:, shifted] += shift
            pred = z.argmax(-1)
            sel = sum((lab == c) for c in shifted).bool()
            n = int(lab.shape[0])
            e = int((pred != lab).sum())
            return dict(
                system=name, set=set_name, errors=e, error_rate=100.0 * e / n, n=n,
                errors_on=f"{int((pred[sel] != lab[sel]).sum())} of {int(sel.sum())} {on}s",
                bias_shift=shift, transfer_size=int(subset.numel()), epochs=s["transfer_epochs"],
                wall_s=wall, command=ctx.command,
            )

        dev_shift, _ = M.best_bias_shift(logits["valid"], labels["valid"], shifted)
        test_shift, _ = M.best_bias_shift(logits["test"], labels["test"], shifted)
        rows = [
            row(system, "dev", 0.0),
            row(system, "test", 0.0),
            row(f"{system}-bias", "test", test_shift),
            row(f"{system}-bias-dev", "dev", dev_shift),
            row(f"{system}-bias-dev", "test", dev_shift),
        ]
        _save_model(model, ctx.exp / "transfer" / system / "model.pt")
        _report(ctx, T_TRANSFER, rows, hist, out, columns=TRANSFER_COLUMNS)


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Context(args)
    steps = {
        "prepare": prepare, "teacher": teacher, "baseline": baseline, "distill": distill,
        "sweep": sweep, "transfer": transfer, "report": report,
    }
    names = list(steps) if args.step == "all" else [args.step]
    for name in names:
        t0 = time.time()
        log.info("mnist %s ...", name)
        steps[name](ctx)
        log.info("mnist %s done in %.1f s", name, time.time() - t0)
    return 0
