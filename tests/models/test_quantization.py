"""4-bit NF4 and 8-bit loading through bitsandbytes (its CPU kernels), k-bit training
preparation and gradient checkpointing, on the embedded model."""

import numpy as np
import pytest
import torch

from families.harness import run_tiny
from fedvlm.config import load_config
from fedvlm.errors import ConfigError
from fedvlm.models.load import attach_lora, embedded_model_path, is_quantized, load_base

bnb = pytest.importorskip("bitsandbytes")


def test_4bit_federated_run_trains_lora_on_a_quantized_language_model(tmp_path):
    cfg, fed, run_dir = run_tiny(tmp_path, "embedded", ["eval.max_new_tokens=3"], "model.quantization=4bit")
    base = fed.model.get_base_model()
    assert is_quantized(base)
    four_bit = [n for n, m in base.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and all("language_model" in n for n in four_bit)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in base.model.vision_tower.modules())
    assert base.model.language_model.layers[0].self_attn.q_proj.base_layer.weight.quant_state.nested  # double quant
    from safetensors.numpy import load_file

    final = load_file(str(run_dir / "adapters" / "final" / "adapter_model.safetensors"))
    unchanged = [k for k in final if np.array_equal(final[k], fed.initial_adapter[k])]
    assert unchanged == []
    # the adapter trained on the 4-bit base loads into the full-precision base
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    stock = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(str(embedded_model_path())), str(run_dir / "adapters" / "final")
    )
    loaded = {n: p for n, p in stock.named_parameters() if "lora_B" in n}
    assert loaded and any(p.abs().sum() > 0 for p in loaded.values())


def test_8bit_model_trains_lora():
    model, processor, family = load_base("embedded", quantization="8bit")
    assert getattr(model, "is_loaded_in_8bit", False)
    model = attach_lora(model, family, 4, 8, 0.0, "auto", [], seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    from fedvlm.train.tasks import build_task

    from fedvlm.data.easyvqa import load_easyvqa

    rows = load_easyvqa("train")[:4]
    batch = build_task(family, processor).training_batch(rows)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(changed) == len(before)


@pytest.mark.parametrize("aggregation", ["flora", "fedex"])
def test_merging_methods_refuse_a_quantized_base(aggregation):
    with pytest.raises(ConfigError, match="full-precision base"):
        load_config(None, ["model.quantization=4bit", f"federated.aggregation={aggregation}"])


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    from fedvlm.data.easyvqa import load_easyvqa
    from fedvlm.train.tasks import build_task

    rows = load_easyvqa("train")[:4]
    results = []
    for checkpointing in (False, True):
        base, processor, family = load_base("embedded", gradient_checkpointing=checkpointing)
        model = attach_lora(base, family, 4, 8, 0.0, "auto", ["multi_modal_projector"], seed=0)
        model.train()
        calls = []  # a checkpointed layer runs forward again during backward
        layer = base.model.language_model.layers[0].self_attn
        layer.register_forward_hook(lambda *args: calls.append(1))
        loss = model(**build_task(family, processor).training_batch(rows)).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.item(), grads, len(calls)))
    (loss0, grads0, calls0), (loss1, grads1, calls1) = results
    assert (calls0, calls1) == (1, 2)
    assert loss0 == pytest.approx(loss1, abs=1e-6)
    assert grads0.keys() == grads1.keys()
    assert all(torch.allclose(grads0[n], grads1[n], atol=1e-6) for n in grads0)
