"""Sentence embeddings for the classifier: all-MiniLM-L6-v2 through ONNX Runtime.

The model is ``mail/model/encoder.onnx`` (int8, with sentence-transformers' mean pooling and
normalisation inside; ``python -m mail.export_encoder`` builds it from the PyTorch weights) and
its tokenizer ``mail/model/tokenizer.json``: both ship with the package, so nothing is
downloaded at run time and torch is not needed. One thread: workers run one job per core, and
a thread pool inherited across RQ's fork is a known way to hang a work-horse.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_TOKENS = 128  # an email's point is in its opening; longer input costs time, not accuracy
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_DIR = Path(__file__).resolve().parent / "model"
ENCODER_FILE = MODEL_DIR / "encoder.onnx"
TOKENIZER_FILE = MODEL_DIR / "tokenizer.json"


def encoder_fingerprint(path: Path = ENCODER_FILE) -> str:
    """The encoder file's SHA-256: trained weights record the encoder they were trained on."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Encoder:
    """Texts to unit-length 384-dimension vectors."""

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about the quantised graph are not ours to fix
        self._session = onnxruntime.InferenceSession(
            str(ENCODER_FILE), options, providers=["CPUExecutionProvider"]
        )

    def encode(self, texts: Sequence[str]) -> Any:
        """An (n, 384) float32 array, one unit vector per text, in the order given.

        One text per run: the int8 model quantises each run's activations with that run's own
        scale, so a text batched with others would get a slightly different vector, and a
        single email costs the same per text as a batch of them on one core."""
        import numpy as np

        vectors = np.zeros((len(texts), 384), dtype=np.float32)
        for row, encoding in enumerate(self._tokenizer.encode_batch(list(texts))):
            ids = np.asarray([encoding.ids], dtype=np.int64)
            (embedded,) = self._session.run(
                None, {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            )
            vectors[row] = embedded[0]
        return vectors


_encoder: Encoder | None = None
_lock = threading.Lock()


def get_encoder() -> Encoder:
    """The process's encoder, loaded on first use (a fraction of a second)."""
    global _encoder
    with _lock:
        if _encoder is None:
            _encoder = Encoder()
        return _encoder
