"""Rollouts from a vLLM server (`rollout.backend: vllm`, the optional `vllm` extra) through TRL 1.16's `VLLMClient`,
and the policy's weights pushed back to it after each step.

The server (GPUs of its own; docs/launching.md) is vLLM's OpenAI-compatible server in development mode, the one
`trl.generation.vllm_client.VLLMClient` speaks to:

    VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --weight-transfer-config '{"backend": "nccl"}' \
        --mm-processor-kwargs '{"min_pixels": MIN, "max_pixels": MAX}' --logprobs-mode processed_logprobs

What travels:
- **Generation**: `VLLMClient.chat`, one conversation per sample, a step's samples sent together
  (`rollout.vllm_concurrency` in flight per process) so the server batches them: mmrl's own chat turns
  (`mmrl.models.prompts.build_messages`) with the image (TRL inlines it as a lossless PNG), `n` = G, the rollout
  config's temperature / top-p / top-k / max tokens, and in the request body a per-sample `seed` (the HF path's),
  `<|im_end|>` and `<|endoftext|>` as stop tokens and the vision tokens suppressed (`logit_bias` -100). The token
  ids and the sampled tokens' log-probs come back and become a `Rollout` (`vllm_wire.to_rollout`); the log-probs
  feed the sampler correction (`rollout.vllm_importance_sampling`, `mmrl.rl.algo.sampler_correction`).
- **Weights**: after each optimisation step the main process streams every weight of the policy (LoRA merged in,
  cast to bfloat16) with `VLLMClient.update_named_params` inside its `weight_update` (vLLM's NCCL weight-transfer
  protocol, opened once by `init_communicator`), then `reset_prefix_cache`.

Robustness: the client's HTTP session gets a default timeout (`rollout.vllm_timeout`, TRL sets none) and
`rollout.vllm_retries` retries with back-off on connection and read errors and HTTP 500/502/503.

Checks, so a prompt is never silently different from the one mmrl trains on:
- at start, the server's `mm_processor_kwargs` (from `/server_info`) must set mmrl's `model.min_pixels` and
  `model.max_pixels`: missing or different is a `UserError` that names the flag to start the server with;
- on every request, the prompt token ids the server echoes must equal mmrl's own, else a `UserError`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import torch

from mmrl.errors import UserError
from mmrl.models.prompts import build_messages
from mmrl.rollout.colocate import ColocateBackend, VLLMEngine
from mmrl.rollout.hf import STOP_TOKENS, SUPPRESSED_TOKENS, Rollout, token_ids
from mmrl.rollout.vllm_wire import check_prompt, find_key, pixel_budget, to_rollout


def configure_session(session: Any, rollout_config: Any, host: str) -> None:
    """The client's `requests` session as mmrl wants it, before its first request: no proxy for a server on this
    machine (a cluster's `http_proxy` would send training images off the node; `NO_PROXY` is often unset), the API
    key of a server started with `--api-key` (from the environment variable `VLLM_API_KEY`, never from the config,
    which is saved in the run folder), and timeouts and retries (below)."""
    if _is_local(host):
        session.trust_env = False  # no proxies, .netrc or CA bundle from the environment for a local server
    key = os.environ.get("VLLM_API_KEY")
    if key:
        session.headers["Authorization"] = f"Bearer {key}"
    _session_with_timeout(session, rollout_config.vllm_timeout, rollout_config.vllm_retries)


def _is_local(host: str) -> bool:
    """Whether `host` is this machine: localhost or a loopback address.

    >>> _is_local("127.0.0.1"), _is_local("localhost"), _is_local("::1"), _is_local("10.0.0.7"), _is_local("node-3")
    (True, True, True, False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _session_with_timeout(session: Any, timeout: float, retries: int) -> None:
    """Mount an adapter on the client's `requests` session that retries and gives every request a timeout."""
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class TimeoutAdapter(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:
            kwargs["timeout"] = kwargs.get("timeout") or timeout
            return super().send(request, **kwargs)

    retry = Retry(total=retries, connect=retries, read=retries, status=retries, status_forcelist=[500, 502, 503],
                  backoff_factor=1.0, allowed_methods=["GET", "POST"], raise_on_status=False)  # fmt: skip
    adapter = TimeoutAdapter(max_retries=retry, pool_maxsize=64)
    session.mount("http://", adapter)
    session.mount("https://", adapter)


def make_client(rollout_config: Any) -> Any:
    """TRL's VLLMClient for the configured server, waited for up to `rollout.vllm_timeout` seconds."""
    try:
        from trl.generation.vllm_client import VLLMClient
    except ImportError as err:  # pragma: no cover - trl is a dependency
        raise UserError(f"rollout.backend=vllm needs TRL's vLLM client: {err}") from None
    cfg = rollout_config
    base_url = cfg.vllm_base_url or f"http://{cfg.vllm_host}:{cfg.vllm_port}"
    host = urlparse(base_url).hostname or cfg.vllm_host

    class Client(VLLMClient):
        def check_server(self, total_timeout: float = 0.0, retry_interval: float = 2.0) -> None:
            """TRL's constructor calls this before any other request; TRL's own check uses a bare `requests.get`
            (the environment's proxies, no key), so the wait for /health is redone here through the session."""
            configure_session(self.session, cfg, host)
            deadline = time.monotonic() + total_timeout
            while True:
                try:
                    if self.session.get(f"{self.base_url}/health", timeout=min(cfg.vllm_timeout, 10.0)).ok:
                        return
                except OSError as err:  # requests' ConnectionError and timeouts
                    if time.monotonic() >= deadline:
                        raise ConnectionError(f"the vLLM server can't be reached at {self.base_url}: {err}") from None
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"the vLLM server at {self.base_url} is not healthy")
                time.sleep(retry_interval)

    try:
        client = Client(base_url=base_url, group_port=cfg.vllm_group_port, connection_timeout=cfg.vllm_timeout)
    except ImportError:
        raise UserError("rollout.backend=vllm needs vLLM on the trainer too: pip install 'mmrl[vllm]'") from None
    except OSError as err:  # requests' ConnectionError, once the wait is over
        raise UserError(
            f"no vLLM server at {base_url} after {cfg.vllm_timeout:g} s ({err}); start "
            "it first (docs/launching.md) or set rollout.vllm_host / rollout.vllm_port / rollout.vllm_base_url"
        ) from None
    return client


class VLLMBackend:
    """A vLLM server as the rollout engine of one training process (every process generates its own groups)."""

    def __init__(self, rollout_config: Any, model_config: Any, data_config: Any, processor: Any, client: Any) -> None:
        self.config = rollout_config
        self.model_config = model_config
        self.data_config = data_config
        self.processor = processor
        self.client = client
        self.stop_ids = token_ids(processor, STOP_TOKENS)
        self.suppressed_ids = token_ids(processor, SUPPRESSED_TOKENS)
        self.weight_pushes = 0
        self.pool = ThreadPoolExecutor(max_workers=rollout_config.vllm_concurrency, thread_name_prefix="vllm")

    def check_pixel_budget(self) -> None:
        """The server must resize images exactly as mmrl does: its processor kwargs name mmrl's pixel budget."""
        try:
            info = self.client.get_server_info()
        except RuntimeError as err:  # TRL: a 404, the development endpoints are off
            raise UserError(f"{err} (mmrl needs its settings and the weight updates)") from None
        server = pixel_budget(find_key(info, "mm_processor_kwargs"))
        ours = (self.model_config.min_pixels, self.model_config.max_pixels)
        if server != ours:
            flag = json.dumps({"min_pixels": ours[0], "max_pixels": ours[1]})
            raise UserError(
                f"the vLLM server's pixel budget (min_pixels, max_pixels) = {server} differs from mmrl's "
                f"model.min_pixels / model.max_pixels = {ours}: its prompts would hold other image tokens. "
                f"Start the server with --mm-processor-kwargs '{flag}'"
            )

    # --- generation ---------------------------------------------------------------------------------------------

    def generate_groups(
        self,
        samples: list[Any],
        images: list[Any],
        prompt_ids: list[torch.Tensor],
        num_generations: int,
        seeds: list[int],
    ) -> list[Rollout]:
        """G completions of each sample, the requests sent together (the server batches what is in flight)."""
        futures = [self.pool.submit(self.request_rollout, *args, num_generations, seed)
                   for *args, seed in zip(samples, images, prompt_ids, seeds, strict=True)]  # fmt: skip
        return [future.result() for future in futures]

    def request_rollout(
        self, sample: Any, image: Any, prompt_ids: torch.Tensor, num_generations: int, seed: int
    ) -> Rollout:
        """One request for G completions; `prompt_ids` (1, P) is mmrl's own prompt, which the server's must equal."""
        cfg = self.config
        messages = build_messages(sample, self.data_config)
        for message in messages:  # the image placeholder gets its pixels; TRL sends them as a PNG data URL
            message["content"] = [{"type": "image", "image": image} if part["type"] == "image" else part
                                  for part in message["content"]]  # fmt: skip
        extra = {"seed": seed, "stop_token_ids": self.stop_ids, "skip_special_tokens": False,
                 "logit_bias": {str(i): -100 for i in self.suppressed_ids}}  # fmt: skip
        try:
            out = self.client.chat(
                [messages], n=num_generations, temperature=cfg.temperature, top_p=cfg.top_p,
                top_k=cfg.top_k if cfg.top_k > 0 else -1, max_tokens=cfg.max_completion_length, logprobs=0,
                generation_kwargs=extra, max_concurrent_requests=1,
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001 - requests' errors after the retries; TRL raises Exception on non-200
            raise UserError(f"sample {sample.id}: the vLLM server failed after retries: {err}") from None
        check_prompt(self.processor, sample.id, prompt_ids[0].tolist(), out["prompt_ids"][0])
        logps = None if out["logprobs"] is None else [[pos[0] for pos in row] for row in out["logprobs"]]
        return to_rollout(self.processor, out["completion_ids"], logps, num_generations, cfg.max_completion_length,
                          prompt_ids.device)  # fmt: skip

    # --- weights ------------------------------------------------------------------------------------------------

    def init_weight_sync(self, device: torch.device) -> None:
        """Open the NCCL group that joins this (main) process to the server's workers, as rank 0."""
        if device.type != "cuda":
            raise UserError(
                "rollout.backend=vllm pushes weights to the server over NCCL, which needs the trainer on a CUDA device"
            )
        try:
            self.client.init_communicator(device)
        except RuntimeError as err:  # no weight-transfer engine, or no development endpoints
            raise UserError(str(err)) from None

    def push_weights(self, named_params: list[tuple[str, torch.Tensor]]) -> None:
        """Stream `named_params` (HF names) to the server in one weight update, then drop its cached prompts."""
        tensors = [(name, t.detach().to(torch.bfloat16) if t.is_floating_point() else t.detach())
                   for name, t in named_params]  # fmt: skip
        metadata = [(name, str(t.dtype).removeprefix("torch."), list(t.shape)) for name, t in tensors]
        with self.client.weight_update():
            self.client.update_named_params(metadata, iter(tensors))
        self.client.reset_prefix_cache()  # cached prompts hold the old weights' keys and values
        self.weight_pushes += 1


def merged_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights of an unwrapped model under their Hugging Face names, LoRA adapters merged in (and left out)."""
    if not hasattr(model, "merge_adapter"):
        yield from ((name, param.detach()) for name, param in model.named_parameters())
        return
    model.merge_adapter()  # peft: merged copies of the weights, then the adapters come back off
    try:
        for name, param in model.named_parameters():
            if "lora_" not in name:
                yield name.removeprefix("base_model.model.").replace(".base_layer", ""), param.detach().clone()
    finally:
        model.unmerge_adapter()


def policy_weights(run: Any, every_process: bool = False) -> list[tuple[str, torch.Tensor]]:
    """The policy's weights under their Hugging Face names (every process must call this: ZeRO-3 / FSDP gather).

    Sharded runs gather the full state dict (on the main process); LoRA adapters are merged into the base weights.
    Only the main process gets them unless `every_process` (a colocated engine on each process needs them)."""
    from accelerate.utils import DistributedType

    acc = run.accelerator
    if acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        state = acc.get_state_dict(run.model)
        return list(state.items()) if acc.is_main_process else []
    if not (acc.is_main_process or every_process):
        return []
    return list(merged_weights(run.unwrapped_model))


def connect(run: Any) -> Any:
    """The vLLM backend of a training run. Server: reachable, pixel budget equal, (main process) weight group open.
    Colocated: an engine on this process's GPU (shared by its tensor-parallel group)."""
    config = run.config
    if config.rollout.backend == "vllm_colocate":
        return connect_colocated(run)
    backend = VLLMBackend(config.rollout, config.model, config.data, run.processor, make_client(config.rollout))
    backend.check_pixel_budget()
    if run.accelerator.is_main_process:
        backend.init_weight_sync(run.device)
    if run.step > 0:  # resumed: the server still holds the initial weights
        sync_weights(run, backend)
    return backend


def connect_colocated(run: Any) -> ColocateBackend:
    """A colocated engine per process (one per tensor-parallel group of consecutive processes); DDP or one GPU."""
    from accelerate.utils import DistributedType

    acc, cfg = run.accelerator, run.config.rollout
    if acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        raise UserError(
            "rollout.backend=vllm_colocate loads the full weights into each process's engine: use it with DDP or one "
            "GPU; with DeepSpeed or FSDP use a vLLM server (rollout.backend=vllm)"
        )
    tp = cfg.vllm_tensor_parallel_size
    if acc.num_processes % tp:
        raise UserError(f"rollout.vllm_tensor_parallel_size={tp} must divide the {acc.num_processes} processes")
    tp_group = None
    if tp > 1:  # consecutive ranks share an engine: [0..tp-1], [tp..2tp-1], ...
        ranks = [list(range(i, i + tp)) for i in range(0, acc.num_processes, tp)]
        tp_group, _ = torch.distributed.new_subgroups_by_enumeration(ranks)
    engine = VLLMEngine(run.config.model.name_or_path, cfg, run.config.model, acc.process_index // tp)
    backend = ColocateBackend(engine, cfg, run.processor, lambda: policy_weights(run, every_process=True), tp_group)
    if run.step > 0:  # resumed: the engine loaded the initial weights from the folder
        sync_weights(run, backend)
    return backend


def sync_weights(run: Any, backend: Any) -> None:
    """Give the rollout engine the policy's current weights and hold every process until it has them: the server
    (pushed by the main process) or each process's colocated engine."""
    every = bool(getattr(backend, "colocated", False))
    named = policy_weights(run, every_process=every)
    if every or run.accelerator.is_main_process:
        backend.push_weights(named)
    run.accelerator.wait_for_everyone()
