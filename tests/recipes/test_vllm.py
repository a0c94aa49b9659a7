"""The vLLM server backend (through TRL's VLLMClient) against a fake server that records what it receives
(tests/recipes/fake_vllm.py): prompts with their images and sampling parameters, completions turned into a Rollout,
the pixel-budget checks, retries and timeouts, and the weight pushes of a training run. vLLM is not installed here:
TRL's client refuses to start without it, so `is_vllm_available` is patched to True; the NCCL broadcast itself needs
CUDA and vLLM, so a recorder stands in for it (and for opening the group). The HTTP side is TRL's own."""

import base64
import io
import json

import numpy as np
import pytest
import torch

from mmrl.config.loader import ConfigError, load_config
from mmrl.config.schema import TrainConfig
from mmrl.data.manifest import read_manifest
from mmrl.errors import UserError
from mmrl.models.loading import load_model_and_processor
from mmrl.models.prompts import load_image, prompt_inputs, question_text
from mmrl.rl import algo
from mmrl.rl.groups import sample_seed
from mmrl.rl.loop import train
from mmrl.rollout.hf import STOP_TOKENS, SUPPRESSED_TOKENS, token_ids
from mmrl.rollout.vllm import VLLMBackend, make_client

from .conftest import RECIPES
from .fake_vllm import FakeVLLM

RECIPE = "defacto_qwen2_5_vl_7b"
BUDGET = (3136, 1003520)  # the recipe's model.min_pixels / max_pixels


@pytest.fixture(autouse=True)
def trl_client_without_vllm(monkeypatch):
    import trl.generation.vllm_client as client

    monkeypatch.setattr(client, "is_vllm_available", lambda *args, **kwargs: True)


@pytest.fixture
def setup(tiny_overrides):
    """(config, processor, a sample, its image) for the DeFacto recipe on the tiny model."""

    def make(*extra: str):
        config = load_config(TrainConfig, RECIPES / f"{RECIPE}.yaml", [*tiny_overrides(RECIPE), *extra])
        _, processor, _ = load_model_and_processor(config.model)
        manifest = read_manifest(config.data.train_manifest)
        sample = manifest.samples[0]
        return config, processor, sample, load_image(sample, manifest.root)

    return make


def _backend(config, processor, port: int) -> VLLMBackend:
    config.rollout.vllm_port = port
    config.rollout.vllm_timeout = 10.0
    return VLLMBackend(config.rollout, config.model, config.data, processor, make_client(config.rollout))


def test_generate_sends_the_prompt_with_its_image_and_the_sampling_parameters(setup):
    config, processor, sample, image = setup("rollout.max_completion_length=12", "rollout.top_k=5")
    prompt = prompt_inputs(processor, [sample], [image], config.data)
    with FakeVLLM(config.model.name_or_path, *BUDGET) as server:
        backend = _backend(config, processor, server.url_port)
        backend.check_pixel_budget()
        rollout, again = backend.generate_groups([sample] * 2, [image] * 2, [prompt["input_ids"]] * 2, 4, [123, 123])
        body = server.calls("/v1/chat/completions")[0][2]

    # the request: mmrl's own user turn, question first, the image as a lossless PNG of the same pixels
    (user,) = body["messages"]
    text, picture = user["content"]
    assert text == {"type": "text", "text": question_text(sample, "think")}
    png = base64.b64decode(picture["image_url"]["url"].removeprefix("data:image/png;base64,"))
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), np.asarray(image))
    assert (body["n"], body["temperature"], body["top_p"], body["top_k"], body["max_tokens"], body["seed"]) == (
        4, 1.0, 1.0, 5, 12, 123)  # fmt: skip
    assert body["model"] == "fake-qwen" and body["return_token_ids"] and body["logprobs"] and body["top_logprobs"] == 0
    assert body["stop_token_ids"] == token_ids(processor, STOP_TOKENS)
    assert {int(k): v for k, v in body["logit_bias"].items()} == dict.fromkeys(
        token_ids(processor, SUPPRESSED_TOKENS), -100)  # fmt: skip

    # the answer: G contiguous rows, masked after the first stop token, decoded as the HF path decodes
    assert rollout.completion_ids.shape[0] == 4 and rollout.num_generations == 4
    assert torch.equal(rollout.completion_ids, again.completion_ids)  # the seed decides, as on a real server
    im_end = token_ids(processor, ("<|im_end|>",))[0]
    for row, mask, text_out, cut in zip(rollout.completion_ids, rollout.completion_mask, rollout.texts,
                                        rollout.truncated, strict=True):  # fmt: skip
        kept = row[mask.bool()]
        assert bool(cut) == (im_end not in kept.tolist())
        assert text_out == processor.tokenizer.decode([t for t in kept.tolist() if t != im_end])
        assert (rollout.sampling_logps[0][~rollout.completion_mask[0].bool()] == 0).all()
    assert (rollout.sampling_logps[rollout.completion_mask.bool()] <= 0).all()


def test_pixel_budget_mismatch_is_an_error_at_start(setup):
    config, processor, _, _ = setup()
    with FakeVLLM(config.model.name_or_path, 3136, 200704) as server:
        backend = _backend(config, processor, server.url_port)
        with pytest.raises(UserError, match=r"--mm-processor-kwargs '\{\"min_pixels\": 3136, \"max_pixels\": 1003520"):
            backend.check_pixel_budget()
    with FakeVLLM(config.model.name_or_path, *BUDGET, advertised={}) as server:  # a server started without the flag
        backend = _backend(config, processor, server.url_port)
        with pytest.raises(UserError, match=r"\(None, None\) differs"):
            backend.check_pixel_budget()
        server.dev_mode = False  # a server started without VLLM_SERVER_DEV_MODE=1
        with pytest.raises(UserError, match="VLLM_SERVER_DEV_MODE=1"):
            backend.check_pixel_budget()


def test_a_prompt_the_server_renders_differently_is_an_error(setup, tmp_path):
    """A server that claims mmrl's budget but resizes otherwise: the echoed prompt ids give it away."""
    from PIL import Image

    config, processor, sample, _ = setup()
    image = Image.new("RGB", (448, 448), "white")  # 256 image tokens at mmrl's budget, fewer at the server's
    prompt = prompt_inputs(processor, [sample], [image], config.data)
    claim = {"min_pixels": BUDGET[0], "max_pixels": BUDGET[1]}
    with FakeVLLM(config.model.name_or_path, 3136, 50176, advertised=claim) as server:
        backend = _backend(config, processor, server.url_port)
        backend.check_pixel_budget()  # the claim passes
        with pytest.raises(UserError, match="256 image tokens; vLLM: .* 64 image tokens"):
            backend.generate_groups([sample], [image], [prompt["input_ids"]], 2, [0])


def test_no_server_is_a_clear_error(setup):
    config, processor, _, _ = setup()
    config.rollout.vllm_port, config.rollout.vllm_timeout = 9, 0.5  # nothing listens on the discard port
    with pytest.raises(UserError, match="no vLLM server at http://127.0.0.1:9"):
        make_client(config.rollout)


def test_a_local_server_is_reached_past_a_proxy_with_the_api_key(setup, monkeypatch):
    # a cluster's proxy variables must not route a local server's traffic (training images) through the proxy: the
    # proxy here is the discard port, so a request sent through it would fail; the key goes in every request
    config, processor, sample, image = setup("rollout.max_completion_length=6")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("VLLM_API_KEY", "secret-key")
    prompt_ids = prompt_inputs(processor, [sample], [image], config.data)["input_ids"]
    with FakeVLLM(config.model.name_or_path, *BUDGET) as server:
        config.rollout.vllm_base_url = f"http://localhost:{server.url_port}"  # the URL form: host and port unused
        config.rollout.vllm_port = 9
        backend = _backend(config, processor, 9)
        (rollout,) = backend.generate_groups([sample], [image], [prompt_ids], 2, [7])
    assert rollout.completion_ids.shape[0] == 2
    assert server.authorization and set(server.authorization) == {"Bearer secret-key"}


def test_vllm_base_url_must_be_http_or_https(setup):
    with pytest.raises(ConfigError, match="rollout.vllm_base_url must start with http:// or https://"):
        setup("rollout.vllm_base_url=ftp://host:8000")


def test_weight_sync_needs_cuda(setup):
    config, processor, _, _ = setup()
    with FakeVLLM(config.model.name_or_path, *BUDGET) as server:
        backend = _backend(config, processor, server.url_port)
        with pytest.raises(UserError, match="CUDA"):
            backend.init_weight_sync(torch.device("cpu"))


def test_a_failing_server_is_retried_then_a_clear_error(setup):
    config, processor, sample, image = setup("rollout.max_completion_length=6", "rollout.vllm_retries=2")
    prompt_ids = prompt_inputs(processor, [sample], [image], config.data)["input_ids"]
    with FakeVLLM(config.model.name_or_path, *BUDGET) as server:
        backend = _backend(config, processor, server.url_port)
        server.failures = [503, 502]  # two overloaded answers, then a good one: the retries get it
        (rollout,) = backend.generate_groups([sample], [image], [prompt_ids], 2, [7])
        assert len(server.calls("/v1/chat/completions")) == 3 and rollout.completion_ids.shape[0] == 2
        server.failures = [503, 503, 503]  # more than the retries
        with pytest.raises(UserError, match=f"sample {sample.id}: the vLLM server failed after retries: .*503"):
            backend.generate_groups([sample], [image], [prompt_ids], 2, [7])
        server.failures, server.delay = [], 1.0  # an answer slower than the timeout, every try
        config.rollout.vllm_retries, config.rollout.vllm_timeout = 0, 0.3
        slow = VLLMBackend(config.rollout, config.model, config.data, processor, make_client(config.rollout))
        with pytest.raises(UserError, match="failed after retries: .*[Tt]imed? ?out"):
            slow.generate_groups([sample], [image], [prompt_ids], 2, [7])


def test_training_generates_on_the_server_and_pushes_weights_after_each_step(tiny_overrides, monkeypatch):
    import trl.generation.vllm_client as client

    sent: list[dict[str, torch.Tensor]] = []

    def broadcast(iterator, group, src, post_iter_func):  # the NCCL broadcast (CUDA + vLLM) replaced by a recorder
        assert group == "nccl-group" and src == 0
        sent.append({name: post_iter_func((name, t)).clone() for name, t in iterator})

    def init_weight_sync(self, device):  # opening the NCCL group, likewise
        self.client.communicator = "nccl-group"

    monkeypatch.setattr(client, "_HAS_STATEFUL_TRAINER_ENGINE", True)
    monkeypatch.setattr(client, "packed_nccl_broadcast_producer", broadcast, raising=False)
    monkeypatch.setattr(VLLMBackend, "init_weight_sync", init_weight_sync)
    config = load_config(TrainConfig, RECIPES / f"{RECIPE}.yaml", tiny_overrides(RECIPE))
    with FakeVLLM(config.model.name_or_path, *BUDGET) as server:
        config.rollout.backend, config.rollout.vllm_port = "vllm", server.url_port
        run = train(config)
        calls = [path for _, path, _ in server.calls() if path not in ("/health", "/v1/models", "/server_info")]
        generations = [body for _, path, body in server.calls("/v1/chat/completions")]
        updates = [body["update_info"] for _, _, body in server.calls("/update_weights")]

    # 2 steps x 2 samples, each seeded as the HF path seeds it; then the push, in the protocol's order
    push = ["/start_weight_update", "/update_weights", "/finish_weight_update", "/reset_prefix_cache"]
    assert calls == ["/v1/chat/completions"] * 2 + push + ["/v1/chat/completions"] * 2 + push
    assert sorted(g["seed"] for g in generations) == sorted(sample_seed(0, p) for p in range(4))  # sent together
    assert all(g["n"] == 4 for g in generations)
    params = dict(run.unwrapped_model.named_parameters())
    assert len(sent) == 2 and run.vllm.weight_pushes == 2
    for info in updates:
        assert info["names"] == list(params) and set(info["dtype_names"]) == {"bfloat16"}
        assert info["shapes"] == [list(p.shape) for p in params.values()]
    for name, param in params.items():  # the last push holds the final weights
        torch.testing.assert_close(sent[-1][name], param.detach().to(torch.bfloat16), atol=0, rtol=0)
    rows = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["time/weight_sync"] >= 0 for r in rows)


# --- colocated: an in-process engine behind mmrl.rollout.colocate.Engine, driven here by a recording double ---


class RecordingEngine:
    """Stands in for `vllm.LLM` (no CUDA here): echoes the prompt ids it gets, samples random tokens from each
    request's seed (never a suppressed one), and records every call."""

    def __init__(self, model_path, rollout_config, model_config, seed):
        self.calls: list[tuple] = [("init", model_path, seed)]
        self.awake = {"weights", "kv_cache"}
        self.weights: dict[str, torch.Tensor] = {}

    def generate(self, prompts, sampling):
        import random

        assert self.awake == {"weights", "kv_cache"}, "generate needs the weights and the cache awake"
        self.calls.append(("generate", [s["seed"] for s in sampling], [s["n"] for s in sampling]))
        out = []
        for prompt, s in zip(prompts, sampling, strict=True):
            assert prompt["multi_modal_data"]["image"].mode == "RGB"
            banned = set(s["logit_bias"]) | set(s["stop_token_ids"])
            completions, logps = [], []
            for k in range(s["n"]):
                rng = random.Random(s["seed"] * 1000 + k)
                length = rng.randint(1, s["max_tokens"])
                ids = [rng.choice([i for i in range(300) if i not in banned]) for _ in range(length)]
                if length < s["max_tokens"]:
                    ids[-1] = s["stop_token_ids"][0]
                completions.append(ids)
                logps.append([-rng.random() for _ in ids])
            out.append((prompt["prompt_token_ids"], completions, logps))
        return out

    def sleep(self):
        self.calls.append(("sleep",))
        self.awake = set()

    def wake_up(self, tags):
        self.calls.append(("wake_up", tuple(tags)))
        self.awake |= set(tags)

    def load_weights(self, named):
        assert "weights" in self.awake
        self.weights = {name: t.clone() for name, t in named}
        self.calls.append(("load_weights", len(self.weights)))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))


def test_colocated_engine_sleeps_during_the_update_and_gets_the_weights_after_each_step(tiny_overrides, monkeypatch):
    import mmrl.rollout.vllm as vllm_backend

    engines: list[RecordingEngine] = []
    monkeypatch.setattr(vllm_backend, "VLLMEngine", lambda *args: engines.append(RecordingEngine(*args)) or engines[-1])
    corrected: list[torch.Tensor] = []
    real_correction = algo.sampler_correction

    def correction(*args, **kwargs):  # the sampler correction runs, on the engine's log-probs
        corrected.append(real_correction(*args, **kwargs))
        return corrected[-1]

    monkeypatch.setattr(algo, "sampler_correction", correction)
    config = load_config(
        TrainConfig, RECIPES / f"{RECIPE}.yaml", [*tiny_overrides(RECIPE), "rollout.backend=vllm_colocate"]
    )
    run = train(config)
    (engine,) = engines
    names = [c[0] for c in engine.calls]
    step = ["wake_up", "generate", "sleep", "wake_up", "load_weights", "reset_prefix_cache"]
    assert names == ["init", *step, *step]
    assert engine.calls[1] == ("wake_up", ("kv_cache",)) and engine.calls[4] == ("wake_up", ("weights",))
    seeds = [seed for c in engine.calls if c[0] == "generate" for seed in c[1]]
    assert sorted(seeds) == sorted(sample_seed(0, p) for p in range(4))  # one call a step, both samples in it
    assert all(n == 4 for c in engine.calls if c[0] == "generate" for n in c[2])
    params = dict(run.unwrapped_model.named_parameters())
    assert list(engine.weights) == list(params) and run.vllm.weight_pushes == 2
    for name, param in params.items():  # the engine holds the final weights
        torch.testing.assert_close(engine.weights[name], param.detach(), atol=0, rtol=0)
    assert corrected and all(((w >= 0) & (w <= 3.0)).all() for w in corrected)  # truncated at the cap


def test_colocated_without_vllm_is_a_clear_error(tiny_overrides):
    config = load_config(
        TrainConfig, RECIPES / f"{RECIPE}.yaml", [*tiny_overrides(RECIPE), "rollout.backend=vllm_colocate"]
    )
    with pytest.raises(UserError, match="vllm_colocate needs vLLM"):
        train(config)
