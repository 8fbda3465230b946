"""Data-parallel training over several processes: which process this is, which one writes, and
the relaunch through torchrun that a stage's ``processes`` param asks for.

The DDP itself is Hugging Face's (Trainer on accelerate); this module only says how semid uses it:

- A stage whose ``processes`` param is > 1 and that is not already under torchrun runs itself
  again under ``torch.distributed.run`` (torchrun's own entry point) with that many processes on
  this machine, so ``dvc exp run -S generator.processes=2`` needs no other command. A stage that a
  user started with torchrun (several machines, say) takes torchrun's world size instead.
- Each optimiser step takes one global batch of the params' ``batch_size`` examples from the
  one sampler every process draws alike, split evenly across the processes (accelerate's
  ``split_batches``): the step count and the examples seen are what the params say, whatever
  the number of processes. A batch the world size does not divide is an error.
- Only rank 0 writes outputs, metrics and MLflow runs; the other ranks train and exit.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from semid.schema import ConfigError

# torch is imported inside the functions that need it: every stage imports this module (through
# semid.tracking), and most never train (torch costs ~2.2 s, bench/import_costs.py).

LAUNCHER_ENV = ("LOCAL_RANK", "WORLD_SIZE")  # set by torchrun for each process it starts


def under_launcher() -> bool:
    """True inside a process that torchrun (or accelerate launch) started."""
    return all(name in os.environ for name in LAUNCHER_ENV)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1")) if under_launcher() else 1


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if under_launcher() else 0


def is_main_process() -> bool:
    """The process that writes outputs, metrics and MLflow runs (rank 0 over all machines)."""
    return rank() == 0


def check_batch_split(batch_size: int, processes: int, batch_param: str, processes_source: str) -> None:
    """Each process takes ``batch_size / processes`` examples of every global batch."""
    if processes > 1 and batch_size % processes:
        raise ConfigError(
            f"{batch_param}={batch_size} is not divisible by {processes_source}={processes} (each step's batch is "
            f"split evenly across the processes); choose a {batch_param} that is a multiple of {processes}"
        )


def relaunch(module: str, processes: int) -> bool:
    """Run ``python -m module`` under torchrun with ``processes`` processes on this machine and exit
    with its status; False (nothing done) when one process is asked for or torchrun already runs us."""
    if processes <= 1 or under_launcher():
        return False
    _check_devices(processes)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", module, *sys.argv[1:]]
    print(f"{module}: {processes} processes: python {' '.join(command[1:])}", file=sys.stderr, flush=True)
    sys.exit(subprocess.run(command).returncode)


def _check_devices(processes: int) -> None:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and processes > gpus:
        raise ConfigError(f"{processes} processes asked for but this machine has {gpus} GPU(s); use at most {gpus}")


def trainer_arguments(batch_size: int, param: str) -> dict:
    """The Hugging Face TrainingArguments that make one optimiser step take one global batch of
    ``batch_size`` examples, split across the processes, on the GPU when there is one."""
    processes = world_size()
    check_batch_split(batch_size, processes, param, "the world size (torchrun's WORLD_SIZE)")
    import torch

    # use_cpu matters beyond the device: without it, accelerate under torchrun on a CPU machine
    # joins the process group but does not wrap the model in DDP (measured: parallel_mode
    # NOT_PARALLEL), so each rank would train a model of its own on half the batch.
    arguments = {"per_device_train_batch_size": batch_size, "use_cpu": not torch.cuda.is_available()}
    if processes == 1:
        return arguments
    # split_batches: every process draws the same global batch from the sampler and keeps its slice,
    # so per_device_train_batch_size names the global batch here (accelerate divides it).
    return {
        **arguments,
        "accelerator_config": {"split_batches": True},
        "ddp_backend": "nccl" if torch.cuda.is_available() else "gloo",
    }


def barrier() -> None:
    """Wait for every process (nothing to wait for in a single one)."""
    if world_size() == 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def report_training(trainer, model, batch_size: int, name: str = "") -> None:
    """One line per process after training: the steps it took, its share of the batch, the world
    size the trainer saw and a digest of its weights, equal on every rank when DDP kept them in
    step (a rank training alone would end with weights of its own). Nothing in one process."""
    if world_size() == 1:
        return
    digest = hashlib.sha256()
    for parameter in model.parameters():
        digest.update(parameter.detach().cpu().numpy().tobytes())
    print(
        f"[rank {rank()}/{world_size()}] {name + ': ' if name else ''}trained {trainer.state.global_step} steps of "
        f"{batch_size // world_size()} examples (global batch {batch_size}); trainer world size "
        f"{trainer.args.world_size}; weights {digest.hexdigest()[:16]}",
        file=sys.stderr, flush=True,
    )
