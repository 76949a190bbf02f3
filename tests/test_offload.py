"""Activation offloading (studio/train/offload.py): the bookkeeping, checked on the CPU by
offloading CPU tensors into CPU copies — the same loss and gradients bit for bit, each block's
input out and back, the next one fetched ahead and used, never more than one ahead; and what
stays put (parameters, small tensors, anything on a device not offloaded)."""
import pytest

from test_loss import grads, packed_batch, tiny


def _step(model, batch, ctx):
    from studio.train.loss import causal_lm_loss

    model.zero_grad(set_to_none=True)
    with ctx:
        loss = causal_lm_loss(model, batch, chunk=16)
    loss.backward()
    return float(loss), grads(model)


@pytest.mark.parametrize("checkpointing", [True, False])
def test_offloading_gives_the_same_gradients_bit_for_bit(checkpointing):
    import contextlib

    import torch

    from studio.train.offload import Offloader

    model = tiny("llama")
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    batch = packed_batch()
    plain = _step(model, batch, contextlib.nullcontext())
    off = Offloader(pin=False, min_bytes=0, devices=("cpu",))
    moved = _step(model, batch, off)
    assert moved[0] == plain[0]
    assert moved[1].keys() == plain[1].keys() and any("lora_A" in k for k in plain[1])
    for name, g in plain[1].items():
        assert torch.equal(moved[1][name], g), name
    st = off.stats
    layers = model.config.num_hidden_layers
    assert st["offloaded"] >= layers                       # at least every block's input
    assert st["fetched_ahead"] >= layers - 1 and st["ahead_used"] == st["fetched_ahead"]
    assert st["most_ahead"] == 1                           # the one in use and the next, no more
    assert not off.ahead


def test_with_checkpointing_the_block_inputs_are_what_goes_out():
    """Checkpointing saves each block's input through the hooks (the recomputation saves its own
    inside backward, outside them): with a floor above every small tensor, exactly one tensor a
    block goes out and each comes back ahead of its block but the first one backward needs."""
    from studio.train.offload import Offloader

    model = tiny("llama")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    batch = packed_batch()
    block_input = batch["input_ids"].numel() * model.config.hidden_size * 4  # fp32 [1, T, H]
    off = Offloader(pin=False, min_bytes=block_input, devices=("cpu",))
    _step(model, batch, off)
    layers = model.config.num_hidden_layers
    assert off.stats["offloaded"] >= layers
    assert off.stats["ahead_used"] == off.stats["offloaded"] - 1


def test_parameters_small_tensors_and_other_devices_stay_put():
    import torch

    from studio.train.offload import Offloader, offload_context

    lin = torch.nn.Linear(64, 64)
    x = torch.randn(8, 64, requires_grad=True)
    with Offloader(pin=False, min_bytes=0, devices=("cpu",)) as off:
        y = lin(x).relu().sum()
    y.backward()
    assert off.stats["kept"] >= 1              # the weight a Linear saves for backward
    with Offloader(pin=False, min_bytes=1 << 30, devices=("cpu",)) as off:
        lin(x).relu().sum().backward()
    assert off.stats["offloaded"] == 0 and off.stats["kept"] > 0
    with offload_context(True, pin=False) as off:  # the trainer's: CUDA only, so nothing on a CPU
        lin(x).relu().sum().backward()
    assert off.stats["offloaded"] == 0
    with offload_context(False, pin=False) as none:
        pass
    assert none is None


def test_fetching_ahead_follows_backward_through_swaps_and_lets_go_of_what_it_passed():
    """Backward wants about the reverse of the saving order; two tensors that trade places (a
    norm's input and its statistics) cost one fetch on demand, and the walk goes on from ahead; a
    tensor fetched ahead that backward went well past is let go (and fetched again should it ever
    be wanted)."""
    import torch

    from studio.train import offload
    from studio.train.offload import Offloader

    off = Offloader(pin=False, min_bytes=0, devices=("cpu",))
    saved = [off.pack(torch.full((4,), float(i))) for i in range(20)]
    for i in (19, 17, 18, 16, 15):                            # 17 and 18 trade places
        assert torch.equal(off.unpack(saved[i]), torch.full((4,), float(i)))
    assert off.stats["ahead_used"] == 3 and off.ahead == {14}   # 18, 16, 15
    far = 14 - offload.PASSED - 1
    assert torch.equal(off.unpack(saved[far]), torch.full((4,), float(far)))
    assert saved[14].ahead is None and 14 not in off.ahead    # passed well over: let go
    assert torch.equal(off.unpack(saved[14]), torch.full((4,), 14.0))  # still there when wanted
    assert off.stats["most_ahead"] == 1
