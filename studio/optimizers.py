"""The optimizers a run can choose (train.optimizer), as records: what each choice means to the
trainer (transformers' name for it) and to the memory estimate (state tensors per trainable
parameter and their size), with its help text. Base layer: no imports of the studio's parts.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Optimizer:
    """What an optimizer choice means to the trainer and to the estimate."""
    hf_name: str                   # transformers' TrainingArguments.optim
    states: int                    # state tensors per trainable parameter
    state_bytes: float | None      # bytes per state value (None: the parameter's own dtype)
    help: str
    cuda_only: bool = False        # paged optimizers need CUDA's unified memory


OPTIMIZERS: dict[str, Optimizer] = {
    "adamw": Optimizer(hf_name="adamw_torch", states=2, state_bytes=None,
                       help="AdamW: 2 states in the parameter's dtype"),
    # bitsandbytes' 8-bit AdamW: 1-byte states with one fp32 scale per block of 256 values.
    "adamw-8bit": Optimizer(hf_name="adamw_bnb_8bit", states=2, state_bytes=1 + 4 / 256,
                            help="8-bit AdamW: 2 one-byte states + a fp32 scale per 256 values"),
    "paged-adamw-8bit": Optimizer(hf_name="paged_adamw_8bit", states=2, state_bytes=1 + 4 / 256,
                                  help="8-bit AdamW: 2 one-byte states + a fp32 scale per 256 values",
                                  cuda_only=True),
    "sgd": Optimizer(hf_name="sgd", states=0, state_bytes=0, help="SGD without momentum keeps no state"),
}
