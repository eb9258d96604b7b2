"""Session models: data loading, the GRU4Rec module, training, checkpoints, evaluation.

Owns, here, only the names of a checkpoint directory's files, so that code which
merely finds or lists checkpoints (the models/ registry, `liverec models`) does not
import torch.
"""

FORMAT_VERSION = 1  # of meta.json
WEIGHTS = "model.safetensors"
META = "meta.json"
