"""Layers (floor 3): `nn.functional` (stateless ops), `Module`, `Parameter`, the layers
and `nn.init`. Imports: autograd (and tinygpt.validate).

>>> import tinygpt.nn as nn
>>> layer = nn.Linear(4, 2)
>>> [name for name, _ in layer.named_parameters()]
['weight', 'bias']
"""

from . import functional, init  # noqa: F401
from .module import IncompatibleKeys, Module, Parameter, RemovableHandle  # noqa: F401
from .layers import (GELU, Dropout, Embedding, LayerNorm, Linear, ModuleDict,  # noqa: F401
                     ModuleList, Sequential)
