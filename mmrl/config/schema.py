"""The training run's config: one dataclass per section, loaded by `mmrl.config.loader.load_config`.

Sections: model, data, rollout, grpo, rewards, training, logging. Every field has a default, so an empty YAML
file is a valid (tiny, CPU) config; recipes override what they need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from mmrl.data.images import MAX_IMAGE_PIXELS
from mmrl.rewards.config import RewardConfig
from mmrl.types import Family


@dataclass
class ModelConfig:
    # a Hugging Face folder or a cached hub id (`mmrl tiny-model` makes a tiny folder)
    name_or_path: str = "runs/tiny-qwen2_5_vl"
    # when the folder is missing and this is set explicitly, a tiny model of this family is built there first
    tiny_family: Family | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = False
    # the processor's pixel budget; saved with the exported processor so boxes keep their meaning
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 256
    freeze_vision: bool = False
    freeze_merger: bool = False
    gradient_checkpointing: bool = False
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    lora_vision: bool = False

    def validate(self) -> None:
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"model.min_pixels must be positive and <= max_pixels, got {self.min_pixels}")
        if self.lora_r <= 0:
            raise ValueError("model.lora_r must be positive")


@dataclass
class DataConfig:
    train_manifest: str = "runs/data/synthetic/train/manifest.jsonl"
    eval_manifest: str | None = None
    # "think": <think>..</think> with <box> then <answer>..</answer>; "direct": the answer alone (No-Thinking)
    template: Literal["think", "direct"] = "think"
    system_prompt: str | None = None
    # put the question before the image in the user turn (DESIGN.md: small models learn binding only this way)
    question_first: bool = True
    shuffle: bool = True
    # images over this many pixels are rejected, or shrunk to it with oversize_images=downscale (mmrl.data.images)
    max_image_pixels: int = MAX_IMAGE_PIXELS
    oversize_images: Literal["reject", "downscale"] = "reject"


@dataclass
class RolloutConfig:
    num_generations: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_prompt_length: int = 1024
    max_completion_length: int = 64
    # share each group's prompt (prefill once, expand the cache); off = the plain repeated computation
    share_prompt: bool = True
    # prompts per HF generation call (0: all of a process's samples in one; lower it only if B x G rows don't fit)
    generation_batch_size: int = 0
    # "hf": generate with the policy itself; "vllm": a vLLM server generates (through TRL's VLLMClient) and gets the
    # weights after each step; "vllm_colocate": an in-process vLLM engine on the training GPUs, asleep during the
    # update, weights loaded after each step (mmrl.rollout.vllm, mmrl.rollout.colocate, docs/launching.md)
    backend: Literal["hf", "vllm", "vllm_colocate"] = "hf"
    vllm_host: str = "127.0.0.1"
    vllm_port: int = 8000
    # the server's address as a URL instead (e.g. https://vllm.internal:8000; then vllm_host / vllm_port are unused);
    # a server started with --api-key: export VLLM_API_KEY on the trainer (kept out of the saved config)
    vllm_base_url: str = ""
    vllm_timeout: float = 300.0  # seconds: waiting for the server at start, and for each request
    vllm_retries: int = 3  # retries of a failed request (connection, read, HTTP 500/502/503), backing off
    vllm_group_port: int = 51216  # the NCCL group that carries the weights to the server
    vllm_concurrency: int = 32  # requests (one per sample) in flight per training process
    vllm_tensor_parallel_size: int = 1  # colocate: GPUs of the node one engine spans
    vllm_gpu_memory_utilization: float = 0.3  # colocate: share of each GPU the engine may take (the rest trains)
    vllm_max_model_len: int = 0  # colocate: the engine's context (0: max_prompt_length + max_completion_length)
    # the sampler/trainer mismatch correction with vLLM (TRL's vllm_importance_sampling_*): the loss of each token is
    # weighted by rho = exp(trainer logp - sampler logp), truncated at the cap (*_truncate) or zeroed above it (*_mask)
    vllm_importance_sampling: bool = True
    vllm_importance_sampling_mode: Literal["token_truncate", "sequence_truncate", "token_mask", "sequence_mask"] = (
        "token_truncate"
    )
    vllm_importance_sampling_cap: float = 3.0

    @property
    def importance_correction(self) -> bool:
        """Whether the loss corrects for the sampler/trainer mismatch (vLLM backends only: HF samples the policy)."""
        return self.backend != "hf" and self.vllm_importance_sampling

    def validate(self) -> None:
        for name in ("vllm_port", "vllm_group_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ValueError(f"rollout.{name} must be a TCP port (1-65535), got {getattr(self, name)}")
        if self.vllm_base_url and not self.vllm_base_url.startswith(("http://", "https://")):
            raise ValueError(f"rollout.vllm_base_url must start with http:// or https://, got {self.vllm_base_url!r}")
        if self.vllm_timeout <= 0 or self.vllm_concurrency < 1:
            raise ValueError("rollout.vllm_timeout must be positive and rollout.vllm_concurrency >= 1")
        if self.vllm_retries < 0 or self.generation_batch_size < 0 or self.vllm_max_model_len < 0:
            raise ValueError(
                "rollout.vllm_retries, rollout.generation_batch_size and rollout.vllm_max_model_len must be >= 0"
            )
        if self.vllm_tensor_parallel_size < 1 or not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(
                "rollout.vllm_tensor_parallel_size must be >= 1 and rollout.vllm_gpu_memory_utilization in (0, 1]"
            )
        if self.vllm_importance_sampling_cap <= 1:
            raise ValueError(
                f"rollout.vllm_importance_sampling_cap must be above 1, got {self.vllm_importance_sampling_cap}"
            )
        if self.num_generations < 2:
            raise ValueError("rollout.num_generations must be at least 2 (advantages need a group)")
        if self.temperature <= 0:
            raise ValueError("rollout.temperature must be positive")
        if not 0 < self.top_p <= 1:
            raise ValueError("rollout.top_p must be in (0, 1]")


@dataclass
class GRPOConfig:
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "dapo"
    importance_sampling_level: Literal["token", "sequence"] = "token"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    num_iterations: int = 1
    beta: float = 0.0
    # weight the k3 KL by the importance ratio rho (TRL's use_bias_correction_kl, its default): unbiased gradient
    kl_bias_correction: bool = True
    scale_rewards: Literal["group", "batch", "none"] = "group"
    drop_zero_spread: bool = False
    # with drop_zero_spread: how many more global batches a step may draw to refill the dropped groups
    max_refill_rounds: int = 3

    def validate(self) -> None:
        if self.max_refill_rounds < 0:
            raise ValueError("grpo.max_refill_rounds must be >= 0")
        if not (0 <= self.epsilon_low < 1 and self.epsilon_high >= 0):
            raise ValueError("grpo.epsilon_low must be in [0, 1) and grpo.epsilon_high >= 0")
        if self.num_iterations < 1:
            raise ValueError("grpo.num_iterations must be at least 1")
        if self.beta < 0:
            raise ValueError("grpo.beta must be >= 0")


@dataclass
class TrainingConfig:
    output_dir: str = "runs/train"
    seed: int = 0
    max_steps: int = 10
    batch_size: int = 4  # samples per optimisation step (each makes num_generations completions)
    micro_batch_size: int = 8  # completions per forward/backward
    learning_rate: float = 1e-5
    vision_lr_scale: float = 1.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    warmup_steps: int = 0
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    max_grad_norm: float = 1.0
    save_steps: int = 0  # 0: only at the end
    save_total_limit: int = 2
    resume: Literal["auto", "never"] = "auto"
    # keys (or sections) a resume may change although an uninterrupted run would differ (mmrl.io.resume_guard)
    resume_allow_changes: list[str] = field(default_factory=list)
    eval_steps: int = 0  # evaluate on data.eval_manifest every N steps (0: only at the end)
    # when data.train_manifest is missing: a build config (`mmrl build`) that writes it into the manifest's folder
    build_config: str | None = None

    def validate(self) -> None:
        if self.max_steps < 0 or self.save_steps < 0 or self.eval_steps < 0 or self.warmup_steps < 0:
            raise ValueError("training.max_steps, save_steps, eval_steps and warmup_steps must be >= 0")
        if self.batch_size < 1 or self.micro_batch_size < 1:
            raise ValueError("training.batch_size and training.micro_batch_size must be >= 1")
        if not 0 < self.learning_rate < math.inf:  # NaN fails this too
            raise ValueError("training.learning_rate must be a positive finite number")


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "mmrl"
    samples_steps: int = 10  # write the sampled-completions page every K steps (0: never)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def validate(self) -> None:
        check_templates(self.data, self.rewards)


def check_templates(data: DataConfig, rewards: RewardConfig) -> None:
    """The prompt asks for one completion template and the rewards parse one: they must be the same."""
    if data.template != rewards.template:
        raise ValueError(f"data.template ({data.template}) and rewards.template ({rewards.template}) must match")


@dataclass
class SFTOptions:
    variants: list[str] = field(default_factory=lambda: ["positive", "counterfactual", "random_masked"])
    # share of the items whose counterfactual keeps its (abstention) label; the others' counterfactuals are left out
    counterfactual_fraction: float = 1.0
    # what the other items' counterfactuals become: "drop" (left out) or "original": kept with the original answer
    # and the masked boxes as evidence, as ordinary VQA data labels every image (the habit of answering regardless)
    other_counterfactuals: Literal["drop", "original"] = "drop"
    # stop after this many seconds of training even before training.max_steps (0: no limit); e.g. a control arm
    # that gets the same wall time as a GRPO run
    max_seconds: float = 0.0

    def validate(self) -> None:
        valid = {"positive", "counterfactual", "random_masked"}
        if not self.variants or set(self.variants) - valid:
            raise ValueError(f"sft.variants must name some of {', '.join(sorted(valid))}, got {self.variants}")
        if not 0.0 <= self.counterfactual_fraction <= 1.0:
            raise ValueError("sft.counterfactual_fraction must be in [0, 1]")
        if self.max_seconds < 0:
            raise ValueError("sft.max_seconds must be >= 0")


@dataclass
class SFTConfig:
    """An SFT run's config: the training config's sections (minus grpo) plus `sft`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # max_completion_length caps targets and eval
    rewards: RewardConfig = field(default_factory=RewardConfig)  # used by the evaluation at the end
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sft: SFTOptions = field(default_factory=SFTOptions)

    def validate(self) -> None:
        check_templates(self.data, self.rewards)
