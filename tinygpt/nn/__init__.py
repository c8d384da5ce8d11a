"""Layers (floor 3): `nn.functional` (stateless ops), `Module`, `Parameter`, the layers
and `nn.init`; int8 weights for inference (`quantize_int8`, nn/quantize.py) and magnitude
pruning (`prune`, `sparsity`, nn/pruning.py). Imports: autograd (and tinygpt.validate).

>>> import tinygpt.nn as nn
>>> layer = nn.Linear(4, 2)
>>> [name for name, _ in layer.named_parameters()]
['weight', 'bias']
"""

from . import functional, init  # noqa: F401
from .module import IncompatibleKeys, Module, Parameter, RemovableHandle  # noqa: F401
from .layers import (GELU, Dropout, Embedding, LayerNorm, Linear, ModuleDict,  # noqa: F401
                     ModuleList, Sequential)
from .pruning import prune, pruning_masks, restore_masks, sparsity  # noqa: F401
from .quantize import (Int8Embedding, Int8Linear, load_int8, quantize_int8,  # noqa: F401
                       save_int8)
