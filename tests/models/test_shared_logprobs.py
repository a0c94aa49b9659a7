"""The shared-prompt log-prob pass (each prompt once, completions against its cache) against the plain repeated one.

Log-probs, entropies and the gradients of every trainable parameter must agree to 1e-5 (fp32), with left-padded
prompts of images of different sizes, right-padded completions of different lengths, and micro-batches that cut
groups.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mmrl.models.inputs import repeat_prompt_inputs
from mmrl.models.logprobs import completion_logprobs
from mmrl.models.shared_prompt import checkpointed_modules, unique_prompts
from mmrl.testing import chat_batch

G = 3
LENGTHS = [5, 1, 3, 7, 7, 2]  # real tokens per completion row (EOS included): groups of 3, rows of many lengths


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny matmuls: on shared, oversubscribed cores more threads only add OpenMP barrier stalls
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def completions(processor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (6, 7), mask): random ordinary tokens, right-padded after each row's length."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 400, (len(LENGTHS), max(LENGTHS)), generator=generator)
    mask = (torch.arange(max(LENGTHS)) < torch.tensor(LENGTHS)[:, None]).long()
    return ids.masked_fill(mask == 0, processor.tokenizer.pad_token_id), mask


def logps_and_grads(model, batches, share_prompt: bool, temperature: float = 0.7):
    """Log-probs and entropies of each batch; the gradients of a weighted sum of all of them, accumulated."""
    model.zero_grad(set_to_none=True)
    logps, entropies, row = [], [], 0
    # distinct weights per (row, token) of the whole batch: rows must not mix up
    weights = torch.linspace(-1.0, 1.0, len(LENGTHS) * max(LENGTHS)).view(len(LENGTHS), max(LENGTHS))
    for inputs, ids, mask in batches:
        lp, entropy = completion_logprobs(
            model, inputs, ids, mask, temperature=temperature, return_entropy=True, share_prompt=share_prompt
        )
        (lp * weights[row : row + len(lp)]).sum().backward()
        row += len(lp)
        logps.append(lp.detach())
        entropies.append(entropy)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return torch.cat(logps), torch.cat(entropies), grads


def assert_same(shared, plain) -> None:
    torch.testing.assert_close(shared[0], plain[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(shared[1], plain[1], atol=1e-5, rtol=0)
    assert shared[2].keys() == plain[2].keys() and len(plain[2]) > 0
    for name, grad in plain[2].items():
        torch.testing.assert_close(shared[2][name], grad, atol=1e-5, rtol=0, msg=name)


def test_shared_equals_plain_logprobs_and_gradients(loaded, family, two_images):
    # B = 2 left-padded prompts (84x84 and 196x112 images) for 6 rows: each prompt repeated G = 3 times
    model, processor = loaded[family]
    inputs = chat_batch(processor, two_images)
    assert (inputs["attention_mask"][:, 0] == 0).any(), "the batch should be left-padded"
    ids, mask = completions(processor)
    batch = [(inputs, ids, mask)]
    shared, plain = logps_and_grads(model, batch, True), logps_and_grads(model, batch, False)
    assert_same(shared, plain)
    assert (shared[0][mask == 0] == 0).all() and (shared[0][mask == 1] != 0).all()
    # the vision tower and the merger get gradients through the shared prompt
    assert any(name.startswith("model.visual") for name in shared[2])


def trainer_micro_batches(model, processor, images, ids, mask, sizes):
    """The trainer's micro-batches (`mmrl.rl.groups.group_rows`): one prompt row per completion, cut into `sizes`."""
    from mmrl.rl.groups import group_rows

    groups = [
        SimpleNamespace(
            prompt=chat_batch(processor, [image]), completion_ids=ids[g * G : (g + 1) * G],
            completion_mask=mask[g * G : (g + 1) * G],
        )
        for g, image in enumerate(images)
    ]  # fmt: skip
    ctx = SimpleNamespace(pad_token_id=processor.tokenizer.pad_token_id, device=torch.device("cpu"))
    batches, start = [], 0
    for size in sizes:
        b = group_rows(ctx, groups, list(range(start, start + size)), G)
        batches.append((b["prompt_inputs"], b["completion_ids"], b["completion_mask"]))
        start += size
    return batches


def test_micro_batches_that_cut_groups(loaded, family, two_images):
    # rows 0-3 (group 0 and the head of group 1), then rows 4-5 (the tail of group 1): each micro-batch computes
    # the prompts it touches once; the whole equals the plain pass over all 6 rows in one micro-batch
    model, processor = loaded[family]
    ids, mask = completions(processor, seed=1)
    batches = trainer_micro_batches(model, processor, two_images, ids, mask, [4, 2])
    unique, index = unique_prompts(model, batches[0][0], 4)
    assert unique["input_ids"].shape[0] == 2 and index.tolist() == [0, 0, 0, 1]
    assert unique["image_grid_thw"].shape[0] == 2  # the vision tower sees each image once
    unique, index = unique_prompts(model, batches[1][0], 2)
    assert unique["input_ids"].shape[0] == 1 and index.tolist() == [0, 0]
    assert (unique["attention_mask"][:, 0] == 1).all(), "left-pad columns no prompt uses are dropped"
    whole = trainer_micro_batches(model, processor, two_images, ids, mask, [6])
    assert_same(logps_and_grads(model, batches, True), logps_and_grads(model, whole, False))


def test_vision_tower_runs_once_per_image(loaded, two_images):
    model, processor = loaded["qwen2_vl"]
    inputs = chat_batch(processor, two_images)
    ids, mask = completions(processor)
    seen: list[int] = []
    hook = model.model.visual.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            completion_logprobs(model, inputs, ids, mask, share_prompt=True)
            completion_logprobs(model, repeat_prompt_inputs(model, inputs, G), ids, mask, share_prompt=True)
            completion_logprobs(model, inputs, ids, mask, share_prompt=False)
    finally:
        hook.remove()
    patches = inputs["pixel_values"].shape[0]
    assert seen == [patches, patches, G * patches]  # repeated prompt rows are merged back into one


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_gradient_checkpointing(tiny_model_dirs, two_images, family):
    # the prompt pass runs without checkpointing, the completion pass with it against a read-only cache: the
    # backward's replay of each layer must not see a cache that grew, so log-probs and gradients stay exact
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmrl.models.loading import enable_checkpointing, language_model

    processor = AutoProcessor.from_pretrained(tiny_model_dirs[family])
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dirs[family]).train()
    inputs = chat_batch(processor, two_images)
    ids, mask = completions(processor)
    plain = logps_and_grads(model, [(inputs, ids, mask)], False)
    enable_checkpointing(model)
    assert checkpointed_modules(model)
    replays = []
    for layer in language_model(model).layers:
        checkpoint = layer._gradient_checkpointing_func
        layer._gradient_checkpointing_func = lambda *a, f=checkpoint, **k: replays.append(1) or f(*a, **k)
    shared = logps_and_grads(model, [(inputs, ids, mask)], True)
    assert len(replays) == len(language_model(model).layers)  # only the completion pass was checkpointed
    assert_same(shared, plain)
    assert_same(logps_and_grads(model, [(inputs, ids, mask)], False), plain)  # the plain path, checkpointed
    assert not any(hasattr(layer, "_can_checkpoint_with_cache") and layer._can_checkpoint_with_cache
                   for layer in language_model(model).layers)  # fmt: skip


@pytest.mark.parametrize("share_prompt", [True, False])
def test_config_switch_reaches_every_logprob_pass(loaded, two_images, monkeypatch, share_prompt):
    # rollout.share_prompt decides the path of the policy pass (micro_batch_loss) and the old/reference passes
    import mmrl.models.logprobs
    from mmrl.config.loader import load_config
    from mmrl.config.schema import TrainConfig
    from mmrl.rl.update import fixed_logps, micro_batch_loss

    calls = []
    real = mmrl.models.logprobs.shared_completion_logits  # patched where the log-prob function looks it up
    monkeypatch.setattr(mmrl.models.logprobs, "shared_completion_logits", lambda *a: calls.append(1) or real(*a))
    config = load_config(TrainConfig, None, [f"rollout.share_prompt={str(share_prompt).lower()}", "grpo.beta=0.04"])
    model, processor = loaded["qwen3_vl"]
    ids, mask = completions(processor)
    batch = {"prompt_inputs": chat_batch(processor, two_images), "completion_ids": ids, "completion_mask": mask}
    ctx = SimpleNamespace(config=config, passes=1)  # passes: forwards every process runs (lockstep)
    [ref] = fixed_logps(ctx, model, [batch])
    loss, _ = micro_batch_loss(
        model, batch, torch.randn(6), ref, ref, config, num_micro_batches=1, global_num_tokens=25.0, num_processes=1
    )
    loss.backward()
    model.zero_grad(set_to_none=True)
    assert len(calls) == (2 if share_prompt else 0)
