"""The data pipeline: Python source -> corpus -> ByteLevel BPE -> FIM -> packed token shards -> DataCursor.

``python -m albor.data prepare`` runs every stage; ``prepare(...)`` does the same from Python.
"""

from albor.data.config import DataConfig
from albor.data.packing import load_manifest, load_windows
from albor.data.prepare import default_data_dir, prepare, prepare_config
from albor.data.tokenizer import load_tokenizer, tokenizer_sha256

__all__ = [
    "DataConfig",
    "default_data_dir",
    "load_manifest",
    "load_tokenizer",
    "load_windows",
    "prepare",
    "prepare_config",
    "tokenizer_sha256",
]
