"""asr-kd: knowledge distillation for hybrid DNN-HMM speech recognition."""
from asr_kd import cpu as _cpu

_cpu.configure()  # before anything imports torch: MKL reads its CPU-type setting once (asr_kd/cpu.py)

__version__ = "0.1.0"
