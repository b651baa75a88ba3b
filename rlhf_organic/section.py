"""The base class of every recipe section and stage config: frozen, unknown keys rejected, and no
infinite or NaN numbers (YAML writes them ``.inf`` / ``.nan``; no setting means them, and they pass
range checks such as ``gt=0``, to fail much later as an OverflowError or a NaN loss)."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


MICRO_BATCH_HELP = ("items per forward pass (the step, batch_size, is split into micro-batches whose gradients add up "
                    "to the whole step's exactly): less memory, same optimisation; none: the whole step at once; "
                    "auto: the whole step, halved after each CUDA out-of-memory error")
PRECISION_HELP = ("compute precision: fp32; bf16: bfloat16 autocast with float32 master weights (a CUDA GPU with bf16, or "
                  "a CPU with AMX or AVX512-BF16; refused elsewhere); auto: bf16 autocast only on a bf16 or 4-bit base, "
                  "fp32 otherwise")
Precision = Literal["auto", "fp32", "bf16"]
MicroBatchSize = Annotated[int, Field(ge=1)] | Literal["auto"] | None

# Where ingest and trust run: this process, or a Ray cluster (docs/distributed.md); the same output either way.
ENGINES = ("local", "ray")
Engine = Literal["local", "ray"]
ENGINE_HELP = "local: this process; ray: Ray tasks on the cluster at ray_address (none: a Ray started on this machine)"
RAY_ADDRESS_HELP = "Ray cluster to connect to with engine ray (ray://head:10001, head:6379 or auto); none: start one here"
