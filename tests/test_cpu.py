"""The MKL CPU-type override: when it applies, and that training does not depend on it."""
import json
import os
import subprocess
import sys

import pytest

from asr_kd import cpu

AMD = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx fma avx2\n"
AMD_OLD = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx\n"
INTEL = "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx fma avx2 avx512f\n"
HYGON = "vendor_id\t: HygonGenuine\nflags\t\t: fpu sse2 avx fma avx2\n"


@pytest.mark.parametrize("cpuinfo, machine, env, expected", [
    (AMD, "x86_64", {}, "5"),
    (HYGON, "x86_64", {}, "5"),
    (INTEL, "x86_64", {}, None),
    (AMD_OLD, "x86_64", {}, None),  # no AVX2: the AVX2 kernels would fault
    (AMD, "aarch64", {}, None),
    ("", "x86_64", {}, None),
    (AMD, "x86_64", {"ASR_KD_MKL_OVERRIDE": "0"}, None),
    (AMD, "x86_64", {"MKL_DEBUG_CPU_TYPE": "4"}, None),  # the user's own value wins
])
def test_mkl_cpu_type_rules(cpuinfo, machine, env, expected):
    value, why = cpu.mkl_cpu_type(cpuinfo, machine, env)
    assert value == expected
    assert why


def test_configure_sets_the_environment_only_where_safe(monkeypatch):
    monkeypatch.delenv("MKL_DEBUG_CPU_TYPE", raising=False)
    monkeypatch.delenv("ASR_KD_MKL_OVERRIDE", raising=False)
    code = ("import os, asr_kd; from asr_kd import cpu; "
            "print(os.environ.get('MKL_DEBUG_CPU_TYPE', '')); print(cpu.describe())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    with open("/proc/cpuinfo") as f:
        expected, _ = cpu.mkl_cpu_type(f.read(), os.uname().machine, {})
    assert out[0] == (expected or "")
    assert out[1].startswith("matrix products: ")
    env = dict(os.environ, ASR_KD_MKL_OVERRIDE="0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.splitlines()[0] == ""


TRAIN = r"""
import json, sys
import asr_kd
import torch
from asr_kd.nnet.model import Dnn, DnnConfig
torch.set_num_threads(1)
torch.manual_seed(0)
cfg = DnnConfig.from_preset("small", num_senones=300)
model = Dnn(cfg)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
x = torch.randn(2048, cfg.input_dim)
y = torch.randint(0, 300, (2048,))
losses = []
for step in range(8):
    b = slice(256 * step, 256 * (step + 1))
    loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
    opt.zero_grad(); loss.backward(); opt.step()
    losses.append(loss.item())
w = torch.cat([p.detach().flatten() for p in model.parameters()])
print(json.dumps({"losses": losses, "weights": w.tolist()[::97]}))
"""


def test_training_does_not_depend_on_the_mkl_path():
    """Same seed, eight SGD steps of a small DNN, with and without MKL's AVX2 kernels forced:
    the same losses and weights up to float rounding."""
    runs = []
    for env_change in ({"MKL_DEBUG_CPU_TYPE": "5"}, {"ASR_KD_MKL_OVERRIDE": "0"}):
        env = {k: v for k, v in os.environ.items() if k not in ("MKL_DEBUG_CPU_TYPE", "ASR_KD_MKL_OVERRIDE")}
        env.update(env_change)
        out = subprocess.run([sys.executable, "-c", TRAIN], capture_output=True, text=True, check=True, env=env)
        runs.append(json.loads(out.stdout))
    a, b = runs
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-4)
    assert a["weights"] == pytest.approx(b["weights"], rel=1e-3, abs=1e-5)
