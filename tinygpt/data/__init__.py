"""Data (floor 4): tokenizers, corpora and batch sampling.

- `CharTokenizer` (one token per character) and `BPETokenizer` (GPT-2's byte-level BPE);
  `load_tokenizer`, `tokenizer_from_dict`, `find_tokenizer`, `require_tokenizer`;
- `load_text("default" | "shakespeare" | path)`, `download`, `cache_dir`;
- `train_val_split`, `BatchSampler` / `get_batch`: random (x, y) windows, y = x shifted by one.

Imports: autograd, files, validate, numpy and the standard library (`regex` for BPE).
"""

from .char import CharTokenizer  # noqa: F401
from .bpe import BPETokenizer  # noqa: F401
from .tokenizers import (find_tokenizer, load_tokenizer, require_tokenizer,  # noqa: F401
                         tokenizer_from_dict)
from .corpus import (CORPORA, SHAKESPEARE_SHA256, SHAKESPEARE_URL, DownloadError,  # noqa: F401
                     cache_dir, default_text, download, load_text, read_text_file,
                     shakespeare_path)
from .batches import (BatchSampler, as_token_array, check_token_ids, get_batch,  # noqa: F401
                      train_val_split)
