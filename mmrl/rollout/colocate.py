"""Rollouts from a vLLM engine inside the training process (`rollout.backend: vllm_colocate`), on the training GPUs.

Most single-node users run this: no second set of GPUs. Each training process holds a `vllm.LLM` (with
`rollout.vllm_tensor_parallel_size` > 1, the consecutive processes of a tensor-parallel group share one engine
through vLLM's `external_launcher`, as TRL 1.16 does: each gathers the group's prompts, all generate the same
outputs, each keeps its own share). The engine takes `rollout.vllm_gpu_memory_utilization` of each GPU and sleeps
while the policy trains:

    generate: wake the KV cache -> one `LLM.generate` over all of the step's prompts -> sleep (level 2: weights and
    cache freed) -> policy update -> weights: wake the weights, `load_weights` from the policy, reset the prefix cache

Prompts are mmrl's own token ids with the image (vLLM processes the image with `model.min_pixels`/`max_pixels`);
the prompt ids the engine reports must equal them. Sampling matches the server backend: n = G, temperature, top-p,
top-k, max tokens, the per-sample seed, the stop tokens, the vision tokens suppressed, the sampled tokens' log-probs
(after temperature: `logprobs_mode="processed_logprobs"`) for the sampler correction.

`Engine` is the small interface the backend needs; `VLLMEngine` is the real one (vLLM imported only there, needs
CUDA); the tests drive the backend with a double that records the calls (tests/recipes/test_vllm.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from mmrl.errors import UserError
from mmrl.rollout.hf import STOP_TOKENS, SUPPRESSED_TOKENS, Rollout, token_ids
from mmrl.rollout.vllm_wire import check_prompt, to_rollout

# per prompt: (the prompt token ids the engine used, G completions' token ids, their log-probs or None)
EngineOutput = tuple[list[int], list[list[int]], list[list[float]] | None]


class Engine(Protocol):
    def generate(self, prompts: list[dict[str, Any]], sampling: list[dict[str, Any]]) -> list[EngineOutput]: ...
    def sleep(self) -> None: ...
    def wake_up(self, tags: list[str]) -> None: ...
    def load_weights(self, named: list[tuple[str, torch.Tensor]]) -> None: ...
    def reset_prefix_cache(self) -> None: ...


class VLLMEngine:
    """An in-process `vllm.LLM` with sleep mode, for the policy at `model_path`."""

    def __init__(self, model_path: str, rollout_config: Any, model_config: Any, seed: int) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("rollout.backend=vllm_colocate needs vLLM (and CUDA): pip install 'mmrl[vllm]'") from None
        cfg = rollout_config
        max_len = cfg.vllm_max_model_len or cfg.max_prompt_length + cfg.max_completion_length
        self.llm = LLM(
            model=model_path, tensor_parallel_size=cfg.vllm_tensor_parallel_size,
            gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, max_model_len=max_len,
            max_num_batched_tokens=max(4096, max_len), enable_sleep_mode=True,
            distributed_executor_backend="external_launcher", seed=seed, dtype=model_config.dtype,
            mm_processor_kwargs={"min_pixels": model_config.min_pixels, "max_pixels": model_config.max_pixels},
            logprobs_mode="processed_logprobs", trust_remote_code=model_config.trust_remote_code,
        )  # fmt: skip

    def generate(self, prompts: list[dict[str, Any]], sampling: list[dict[str, Any]]) -> list[EngineOutput]:
        from vllm import SamplingParams

        params = [SamplingParams(**s) for s in sampling]
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        results = []
        for out in outputs:
            completions = [list(c.token_ids) for c in out.outputs]
            logps = [[pos[t].logprob for pos, t in zip(c.logprobs, c.token_ids, strict=True)] if c.logprobs else []
                     for c in out.outputs]  # fmt: skip
            results.append((list(out.prompt_token_ids), completions, logps))
        return results

    def sleep(self) -> None:
        self.llm.sleep(level=2)  # the weights are reloaded from the policy after each step anyway

    def wake_up(self, tags: list[str]) -> None:
        torch.cuda.empty_cache()
        self.llm.wake_up(tags=tags)

    def load_weights(self, named: list[tuple[str, torch.Tensor]]) -> None:
        self.llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights(named)

    def reset_prefix_cache(self) -> None:
        self.llm.reset_prefix_cache()


class ColocateBackend:
    """An engine in this process as the rollout backend; `refresh()` returns the policy's weights (HF names)."""

    colocated = True

    def __init__(
        self, engine: Engine, rollout_config: Any, processor: Any, refresh: Callable[[], list], tp_group: Any = None
    ) -> None:
        self.engine, self.config, self.processor, self.refresh = engine, rollout_config, processor, refresh
        self.tp_group = tp_group  # the processes sharing one tensor-parallel engine (None: this one alone)
        self.stop_ids = token_ids(processor, STOP_TOKENS)
        self.suppressed_ids = token_ids(processor, SUPPRESSED_TOKENS)
        self.has_weights = True  # built from the model folder; level-2 sleep frees them
        self.weight_pushes = 0

    def sampling(self, num_generations: int, seed: int) -> dict[str, Any]:
        cfg = self.config
        return {
            "n": num_generations, "temperature": cfg.temperature, "top_p": cfg.top_p,
            "top_k": cfg.top_k if cfg.top_k > 0 else -1, "max_tokens": cfg.max_completion_length, "seed": seed,
            "stop_token_ids": self.stop_ids, "logit_bias": dict.fromkeys(self.suppressed_ids, -100.0), "logprobs": 0,
            "skip_special_tokens": False,
        }  # fmt: skip

    def generate_groups(
        self,
        samples: list[Any],
        images: list[Any],
        prompt_ids: list[torch.Tensor],
        num_generations: int,
        seeds: list[int],
    ) -> list[Rollout]:
        """G completions of each sample: one engine call over the step's prompts (the TP group's, gathered)."""
        prompts = [{"prompt_token_ids": ids[0].tolist(), "multi_modal_data": {"image": image}}
                   for ids, image in zip(prompt_ids, images, strict=True)]  # fmt: skip
        sampling = [self.sampling(num_generations, seed) for seed in seeds]
        start, local = 0, len(prompts)
        if self.tp_group is not None:  # every process of the group submits the same requests (external_launcher)
            size = torch.distributed.get_world_size(self.tp_group)
            gathered: list[Any] = [None] * size
            torch.distributed.all_gather_object(gathered, (prompts, sampling), group=self.tp_group)
            rank = torch.distributed.get_rank(self.tp_group)
            start = sum(len(p) for p, _ in gathered[:rank])
            prompts = [p for part, _ in gathered for p in part]
            sampling = [s for _, part in gathered for s in part]
        if not self.has_weights:  # a skipped step left the engine asleep without weights
            self.push_weights(self.refresh())
        self.engine.wake_up(["kv_cache"])
        try:
            outputs = self.engine.generate(prompts, sampling)[start : start + local]
        finally:
            self.engine.sleep()  # the policy trains next: give the GPU memory back
            self.has_weights = False
        rollouts = []
        for sample, ids, (engine_ids, completions, logps) in zip(samples, prompt_ids, outputs, strict=True):
            check_prompt(self.processor, sample.id, ids[0].tolist(), engine_ids)
            rollouts.append(to_rollout(self.processor, completions, logps, num_generations,
                                       self.config.max_completion_length, ids.device))  # fmt: skip
        return rollouts

    def push_weights(self, named_params: list[tuple[str, torch.Tensor]]) -> None:
        """Load the policy's weights into the sleeping engine, then drop its cached prompts."""
        self.engine.wake_up(["weights"])
        self.engine.load_weights(named_params)
        self.engine.reset_prefix_cache()
        self.has_weights = True
        self.weight_pushes += 1
