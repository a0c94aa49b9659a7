"""Rollouts from a vLLM server (`rollout.backend: vllm`, the optional `vllm` extra) and weight pushes back to it.

The server (one or more GPUs of its own; docs/launching.md) is vLLM's OpenAI-compatible server in development mode,
the one TRL 1.16's `VLLMClient` speaks to:

    VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --weight-transfer-config '{"backend": "nccl"}' \
        --mm-processor-kwargs '{"min_pixels": MIN, "max_pixels": MAX}' --logprobs-mode processed_logprobs

What travels:
- **Generation**: one `/v1/chat/completions` request per sample, a step's requests sent together
  (`rollout.vllm_concurrency` in flight per process) so the server batches them: mmrl's own chat turns
  (`mmrl.models.prompts.build_messages`) with the image inlined as a lossless PNG data URL, `n` = G, the rollout
  config's temperature / top-p / top-k / max tokens, a per-sample `seed` (the same seed the HF path uses),
  `<|im_end|>` and `<|endoftext|>` as stop tokens and the vision tokens suppressed (`logit_bias` -100), as the HF
  path does. The server returns token ids (`return_token_ids`), which become a `mmrl.rollout.hf.Rollout` through the
  same `finish_rollout` as the HF path (mask after the first stop token, decode); the sampled tokens' log-probs fill
  `sampling_logps` when the server sends them (0 where it does not; the trainer recomputes every log-prob it uses).
- **Weights**: after each optimisation step the main process sends every weight of the policy (LoRA merged in,
  cast to bfloat16) by vLLM's weight-transfer protocol: POST `/start_weight_update`, then `/update_weights` with
  the names, dtypes and shapes while the tensors go over an NCCL group that joins the trainer to the server's
  workers (opened once by `/init_weight_transfer_engine`), POST `/finish_weight_update`, `/reset_prefix_cache`.
  The NCCL side uses vLLM's own helpers (imported only then, as TRL does) and needs CUDA; everything else is HTTP.

Checks, so a prompt is never silently different from the one mmrl trains on:
- at start, the server's `mm_processor_kwargs` (from `/server_info`) must set mmrl's `model.min_pixels` and
  `model.max_pixels`: missing or different is a `UserError` that names the flag to start the server with;
- on every request, the prompt token ids the server echoes must equal mmrl's own (same chat template, same number
  of image tokens), else a `UserError`.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from mmrl.errors import UserError
from mmrl.models.prompts import build_messages
from mmrl.rollout.hf import STOP_TOKENS, SUPPRESSED_TOKENS, Rollout, finish_rollout, token_ids
from mmrl.rollout.vllm_wire import (
    ServerError,
    find_key,
    openai_messages,
    parse_sampling_logps,
    pixel_budget,
)  # fmt: skip

Sender = Callable[[Iterator[tuple[str, torch.Tensor]]], None]


class VLLMBackend:
    """A vLLM server as the rollout engine of one training process (every process generates its own groups)."""

    def __init__(self, rollout_config: Any, model_config: Any, data_config: Any, processor: Any) -> None:
        self.config = rollout_config
        self.model_config = model_config
        self.data_config = data_config
        self.processor = processor
        self.base_url = f"http://{rollout_config.vllm_host}:{rollout_config.vllm_port}"
        self.stop_ids = token_ids(processor, STOP_TOKENS)
        self.suppressed_ids = token_ids(processor, SUPPRESSED_TOKENS)
        self.model_id: str | None = None
        self.sender: Sender | None = None  # the NCCL broadcast, opened on the main process by `init_weight_sync`
        self.weight_pushes = 0
        self.pool = ThreadPoolExecutor(max_workers=rollout_config.vllm_concurrency, thread_name_prefix="vllm")

    # --- HTTP ---------------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        """One JSON request; a non-200 answer is a ServerError with the server's message."""
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.config.vllm_timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:500]
            raise ServerError(f"vLLM server {method} {path}: HTTP {err.code}: {detail}", err.code) from None
        return json.loads(body) if body.strip() else None

    def wait_for_server(self) -> None:
        """Poll `/health` for up to `rollout.vllm_timeout` seconds; then read the served model's id."""
        deadline = time.monotonic() + self.config.vllm_timeout
        while True:
            try:
                self.request("GET", "/health", timeout=5)
                break
            except (urllib.error.URLError, OSError, RuntimeError) as err:
                if time.monotonic() >= deadline:
                    raise UserError(
                        f"no vLLM server at {self.base_url} after {self.config.vllm_timeout:g} s ({err}); start it "
                        "first (docs/launching.md) or set rollout.vllm_host / rollout.vllm_port"
                    ) from None
                time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))
        self.model_id = self.request("GET", "/v1/models")["data"][0]["id"]

    def check_pixel_budget(self) -> None:
        """The server must resize images exactly as mmrl does: its processor kwargs name mmrl's pixel budget."""
        try:
            info = self.request("GET", "/server_info?" + urllib.parse.urlencode({"config_format": "json"}))
        except ServerError as err:
            if err.code != 404:
                raise
            raise UserError(
                f"the vLLM server at {self.base_url} does not expose /server_info (its settings, and the weight "
                "updates): start it with VLLM_SERVER_DEV_MODE=1 in its environment"
            ) from None
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

    def sampling_payload(self, num_generations: int, seed: int) -> dict[str, Any]:
        cfg = self.config
        return {
            "model": self.model_id,
            "n": num_generations,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "top_k": cfg.top_k if cfg.top_k > 0 else -1,
            "max_tokens": cfg.max_completion_length,
            "seed": seed,
            "stop_token_ids": self.stop_ids,
            "logit_bias": {str(i): -100 for i in self.suppressed_ids},
            "skip_special_tokens": False,
            "logprobs": True,
            "top_logprobs": 0,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
        }

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

        payload = self.sampling_payload(num_generations, seed)
        payload["messages"] = openai_messages(build_messages(sample, self.data_config), image)
        response = self.request("POST", "/v1/chat/completions", payload)
        ours = prompt_ids[0].tolist()
        theirs = response.get("prompt_token_ids")
        if theirs != ours:
            pad = token_ids(self.processor, ("<|image_pad|>",))[0]
            seen = "no prompt token ids (vLLM >= 0.10.2 returns them)" if theirs is None else (
                f"{len(theirs)} tokens, {theirs.count(pad)} image tokens")  # fmt: skip
            raise UserError(
                f"sample {sample.id}: the vLLM server's prompt differs from mmrl's ({len(ours)} tokens, "
                f"{ours.count(pad)} image tokens; server: {seen}). Serve the same model folder (chat template) with "
                "mmrl's pixel budget"
            )
        choices = response["choices"]
        if len(choices) != num_generations:
            raise RuntimeError(f"vLLM server returned {len(choices)} completions, asked for {num_generations}")
        rows, logps = [], []
        for choice in choices:
            ids = [int(t) for t in choice["token_ids"]]
            if choice.get("finish_reason") == "stop" and not set(ids) & set(self.stop_ids):
                ids.append(self.stop_ids[0])  # a server that drops the stop token from token_ids
            rows.append(ids or [self.stop_ids[-1]])
            logps.append(parse_sampling_logps(choice.get("logprobs"), len(rows[-1])))
        width = max(len(r) for r in rows)
        pad_id = self.stop_ids[-1]
        completion_ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
        sampling_logps = torch.tensor([lp + [0.0] * (width - len(lp)) for lp in logps], dtype=torch.float32)
        rollout = finish_rollout(self.processor, completion_ids, sampling_logps, num_generations)
        device = prompt_ids.device
        return Rollout(
            rollout.completion_ids.to(device), rollout.completion_mask.to(device), rollout.texts,
            rollout.sampling_logps.to(device), rollout.truncated.to(device), num_generations,
        )  # fmt: skip

    # --- weights ------------------------------------------------------------------------------------------------

    def init_weight_sync(self, device: torch.device) -> None:
        """Open the NCCL group that joins this (main) process to the server's workers, as rank 0."""
        if device.type != "cuda":
            raise UserError(
                "rollout.backend=vllm pushes weights to the server over NCCL, which needs the trainer on a CUDA device"
            )
        try:
            from vllm.utils.network_utils import get_ip
        except ImportError:
            raise UserError("rollout.backend=vllm needs vLLM on the trainer too: pip install 'mmrl[vllm]'") from None
        info = self.request("GET", "/server_info?config_format=json")
        if find_key(info, "weight_transfer_config") is None:
            raise UserError(
                f"the vLLM server at {self.base_url} has no weight-transfer engine: restart it with "
                """--weight-transfer-config '{"backend": "nccl"}'"""
            )
        world_size = self.request("GET", "/get_world_size")["world_size"] + 1
        init_info = {"master_address": get_ip(), "master_port": self.config.vllm_group_port, "rank_offset": 1,
                     "world_size": world_size}  # fmt: skip
        torch.cuda.set_device(device)
        try:  # vLLM >= 0.28: a stateful trainer endpoint and a packed broadcast (TRL 1.16 does the same)
            from vllm.distributed.weight_transfer.nccl_common import trainer_init
            from vllm.distributed.weight_transfer.packed_tensor import packed_nccl_broadcast_producer

            init_info["packed"] = True
            group = self._while_posting("/init_weight_transfer_engine", {"init_info": init_info},
                                        lambda: trainer_init(init_info))  # fmt: skip

            def send(named: Iterator[tuple[str, torch.Tensor]]) -> None:
                packed_nccl_broadcast_producer(iterator=named, group=group, src=0, post_iter_func=lambda item: item[1])

        except ImportError:
            from vllm.distributed.weight_transfer.nccl_engine import (
                NCCLTrainerSendWeightsArgs,
                NCCLWeightTransferEngine,
            )

            group = self._while_posting("/init_weight_transfer_engine", {"init_info": init_info},
                                        lambda: NCCLWeightTransferEngine.trainer_init(init_info))  # fmt: skip

            def send(named: Iterator[tuple[str, torch.Tensor]]) -> None:
                args = NCCLTrainerSendWeightsArgs(group=group, packed=True)
                NCCLWeightTransferEngine.trainer_send_weights(iterator=named, trainer_args=args)

        self.sender = send

    def _while_posting(self, path: str, payload: Any, work: Callable[[], Any]) -> Any:
        """POST `payload` to `path` in a thread while `work()` runs here (the server blocks in the same collective)."""
        errors: list[BaseException] = []

        def post() -> None:
            try:
                self.request("POST", path, payload)
            except BaseException as err:  # noqa: BLE001 - re-raised below, in the caller's thread
                errors.append(err)

        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        try:
            result = work()
        finally:
            thread.join()
        if errors:
            raise errors[0]
        return result

    def push_weights(self, named_params: list[tuple[str, torch.Tensor]]) -> None:
        """Send `named_params` (HF names) to the server: announce names, dtypes and shapes, broadcast, finish."""
        if self.sender is None:
            raise RuntimeError("push_weights before init_weight_sync")
        tensors = [(name, t.detach().to(torch.bfloat16) if t.is_floating_point() else t.detach())
                   for name, t in named_params]  # fmt: skip
        update_info = {
            "names": [name for name, _ in tensors],
            "dtype_names": [str(t.dtype).removeprefix("torch.") for _, t in tensors],
            "shapes": [list(t.shape) for _, t in tensors],
        }
        self.request("POST", "/start_weight_update", {})
        sender = self.sender
        self._while_posting("/update_weights", {"update_info": update_info}, lambda: sender(iter(tensors)))
        self.request("POST", "/finish_weight_update", {})
        self.request("POST", "/reset_prefix_cache")  # cached prompts hold the old weights' keys and values
        self.weight_pushes += 1


def policy_weights(run: Any) -> list[tuple[str, torch.Tensor]]:
    """The policy's weights under their Hugging Face names (every process must call this: ZeRO-3 / FSDP gather).

    Sharded runs gather the full state dict (on the main process); LoRA adapters are merged into the base weights
    (and the LoRA tensors left out), the way vLLM loads a plain checkpoint.
    """
    from accelerate.utils import DistributedType

    acc = run.accelerator
    if acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        state = acc.get_state_dict(run.model)
        return list(state.items()) if acc.is_main_process else []
    model = run.unwrapped_model
    if not acc.is_main_process:
        return []
    if hasattr(model, "merge_adapter"):  # peft: merged copies of the weights, then the adapters come back off
        model.merge_adapter()
        try:
            named = []
            for name, param in model.named_parameters():
                if "lora_" in name:
                    continue
                name = name.removeprefix("base_model.model.").replace(".base_layer", "")
                named.append((name, param.detach().clone()))
            return named
        finally:
            model.unmerge_adapter()
    return [(name, param.detach()) for name, param in model.named_parameters()]


def connect(run: Any) -> VLLMBackend:
    """The backend of a training run: server reachable, pixel budget equal, and (main process) weights in sync."""
    config = run.config
    backend = VLLMBackend(config.rollout, config.model, config.data, run.processor)
    backend.wait_for_server()
    backend.check_pixel_budget()
    if run.accelerator.is_main_process:
        backend.init_weight_sync(run.device)
    if run.step > 0:  # resumed: the server still holds the initial weights
        sync_weights(run, backend)
    return backend


def sync_weights(run: Any, backend: VLLMBackend) -> None:
    """Push the policy's current weights (main process) and hold every process until the server has them."""
    named = policy_weights(run)
    if run.accelerator.is_main_process:
        backend.push_weights(named)
    run.accelerator.wait_for_everyone()
