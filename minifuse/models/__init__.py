"""Pretrained models built from minifuse.nn layers (``pip install 'minifuse[models]'`` for the
checkpoint loaders' safetensors and tokenizers)."""
from .bert import BertConfig, BertModel, CheckpointError, SentenceEncoder, default_model_path

__all__ = ["BertConfig", "BertModel", "CheckpointError", "SentenceEncoder", "default_model_path"]
