"""The `gguf` package's constants module, loaded on its own.

`import gguf` runs the package's __init__, which imports its vocabulary helpers and, through
them, sentencepiece where that is installed. On a CUDA machine with sentencepiece installed
(an H200 box with PyTorch's stack), a llama.cpp CUDA load after that import died of a
segmentation fault. The worker reads model headers in the process that then loads the
model, so it takes only gguf/constants.py (enum and typing imports alone) from the package.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from common.errors import ModelError

_NAME = "swarm_gguf_constants"


def load() -> ModuleType:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.find_spec("gguf")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the gguf package is not installed: pip install gguf")
    path = f"{list(spec.submodule_search_locations)[0]}/constants.py"
    constants_spec = importlib.util.spec_from_file_location(_NAME, path)
    if constants_spec is None or constants_spec.loader is None:
        raise ModelError(f"cannot read the gguf package's constants at {path}")
    module = importlib.util.module_from_spec(constants_spec)
    sys.modules[_NAME] = module
    constants_spec.loader.exec_module(module)
    return module
