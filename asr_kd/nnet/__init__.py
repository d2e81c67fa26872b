"""DNN acoustic models: frame-level data with context splicing, the model, training and distillation."""
from asr_kd.nnet.data import FrameSet, frame_batches, split_by_speaker, subset_utterances
from asr_kd.nnet.model import PRESETS, Dnn, DnnConfig, Ensemble, load_model, save_model
from asr_kd.nnet.train import TrainConfig, frame_accuracy_of, predict, train

__all__ = ["PRESETS", "Dnn", "DnnConfig", "Ensemble", "FrameSet", "TrainConfig", "frame_accuracy_of",
           "frame_batches", "load_model", "predict", "save_model", "split_by_speaker", "subset_utterances", "train"]
