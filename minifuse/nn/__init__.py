"""minifuse.nn: layers, the functions they are made of (``functional``) and initialisers (``init``)."""
from . import functional, init, parallel, utils
from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from .attention import MultiHeadAttention
from .containers import Identity, ModuleDict, ModuleList, Sequential
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import FusedLinear, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .mlp import MLP
from .module import Module, Parameter
from .normalization import LayerNorm, RMSNorm
from .pooling import MaxPool2d
from .sparse import Embedding
from .transformer import TransformerEncoder, TransformerLayer
from .dispatch import (attention_threshold, fusion, fusion_enabled, set_attention_threshold, set_fusion_enabled,
                       use_fused)
from .dispatch import packing, packing_enabled, packing_threshold, set_packing_enabled, set_packing_threshold
