"""The Trainer the studio runs: transformers' Trainer with the studio's loss.

Owns `trainer_class` and the StudioLoss it mixes into the Trainer — the loss computed in chunks
from the final hidden states (train.loss=chunked: the same value and gradients as the model's
own loss, never the full [tokens × vocabulary] logits; evaluation uses it too), the soft anchor
to the base model on replay text (train.replay_mode=kl: anchor.py's KL term, weighted, on the
same forward pass, its running mean logged as `kl`), saved activations offloaded to CPU
memory during the forward pass (offload), and a CPU run's bf16 mixed precision (the training
steps under a bf16 autocast, set here rather than through the Trainer's bf16 flag: accelerate
would autocast model.forward for the rest of the process — the forgetting checks too — and the
chunked loss calls the decoder past it anyway). A batch's key-fact weights (train.fact_weight)
are read by the loss only, never handed to the model's forward. The anchor term is scaled so
that, whatever the gradient accumulation and the number of GPUs, the step's gradient is that of (loss on your
data) + weight × (mean KL per replay position).
"""
from __future__ import annotations

from . import anchor as kl
from .loss import FACT_W, causal_lm_loss, weighted_ce
from .offload import offload_context


def trainer_class(base, loss: str, chunk: int, offload: bool = False, anchor_weight: float = 0.0,
                  cpu_bf16: bool = False, fact_weights: bool = False):
    """`base` (transformers' Trainer) itself when the run needs none of the studio's loss; else
    a subclass with StudioLoss first, set to this run's loss, chunk, offload, anchor weight and
    CPU mixed precision (config.cpu_mixed); `fact_weights`: its batches carry key-fact token
    weights (facts.py), which only the studio's loss reads."""
    if loss != "chunked" and not offload and not anchor_weight and not cpu_bf16 and not fact_weights:
        return base
    return type("StudioTrainer", (StudioLoss, base), {
        "studio_loss": loss, "studio_chunk": chunk, "studio_offload": offload,
        "studio_anchor_weight": anchor_weight, "studio_cpu_bf16": cpu_bf16})


class StudioLoss:
    """The studio's loss, mixed in before a Trainer class by trainer_class (so `super()` is that
    Trainer): chunked, anchored to the base model on replay text, with offloaded activations."""
    studio_loss, studio_chunk = "full", 0  # set by trainer_class: train.loss, train.loss_chunk
    studio_offload, studio_anchor_weight = False, 0.0  # offload on CUDA; the anchor's weight (0: none)
    studio_cpu_bf16 = False  # bf16 mixed precision on a CPU: the training steps under a bf16 autocast
    _kl_sum, _kl_n = 0.0, 0

    def compute_loss_context_manager(self):
        stack = super().compute_loss_context_manager()
        if self.studio_offload and self.model.training:
            stack.enter_context(offload_context(True, pin=True))
        if self.studio_cpu_bf16 and self.model.training:  # training steps only: evaluations stay fp32
            import torch

            stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        return stack

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        where = kl.take(inputs)  # the replay part of a training batch (replay_mode kl)
        if where is None or not self.studio_anchor_weight:
            if self.studio_loss != "chunked":
                return self._model_loss(model, inputs, return_outputs, num_items_in_batch)
            value = causal_lm_loss(model, inputs, self.studio_chunk, num_items_in_batch)
            return self._finish(value, model, inputs, return_outputs, num_items_in_batch)
        got = causal_lm_loss(model, inputs, self.studio_chunk, num_items_in_batch, with_hidden=True) \
            if self.studio_loss == "chunked" else None
        if got is not None:
            value, hidden, (_, head, softcap) = got
            out = self._finish(value, model, inputs, return_outputs, num_items_in_batch)
            term = kl.anchor_kl(head, softcap, hidden, where, self.studio_chunk)
        else:  # the model's own loss and logits (several GPUs, a head that cannot be chunked)
            value, outputs = self._model_loss(model, inputs, True, num_items_in_batch)
            out = (value, outputs) if return_outputs else value
            term = kl.anchor_kl_logits(outputs.logits, where)
        # summed on the device, read at the next log: no GPU wait per micro-batch
        self._kl_sum, self._kl_n = self._kl_sum + term.detach().float(), self._kl_n + 1
        # The Trainer divides a loss by the accumulation steps unless it is already scaled
        # for them; the anchor is a per-micro-batch mean, so it is divided here when it is not.
        scaled = (self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None else
                  self.model_accepts_loss_kwargs and num_items_in_batch is not None)
        term = self.studio_anchor_weight * term / (self.current_gradient_accumulation_steps if scaled else 1)
        if return_outputs:
            return out[0] + term, out[1]
        return out + term

    def _finish(self, value, model, inputs, return_outputs, num_items_in_batch):
        if value is None:  # a head we cannot chunk (e.g. LoRA on lm_head): the model's own loss
            return self._model_loss(model, inputs, return_outputs, num_items_in_batch)
        # divided by the accumulated batch's token count: already scaled for accumulation
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            value = value * (self.accelerator.num_processes if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (value, {"loss": value}) if return_outputs else value

    def _model_loss(self, model, inputs, return_outputs, num_items_in_batch):
        """The model's own loss from its full logits; with key-fact weights in the batch, the
        same cross-entropy weighted per token (the model's forward never sees them)."""
        tw = inputs.get(FACT_W)
        if tw is None:
            self.loss_is_scaled_for_ga = None
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**{k: v for k, v in inputs.items() if k not in ("labels", FACT_W)})
        value = self._finish(weighted_ce(outputs.logits, inputs["labels"], tw, num_items_in_batch),
                             model, inputs, False, num_items_in_batch)
        return (value, outputs) if return_outputs else value

    def log(self, logs, *args, **kwargs):
        if self._kl_n and "loss" in logs:  # the anchor's mean since the last log
            logs["kl"] = round(float(self._kl_sum) / self._kl_n, 5)
            self._kl_sum, self._kl_n = 0.0, 0
        return super().log(logs, *args, **kwargs)
