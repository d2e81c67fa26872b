"""asr-kd: knowledge distillation for hybrid DNN-HMM speech recognition."""
__version__ = "0.1.0"
