"""The processes of one `accelerate launch` (or torchrun, or MPI) that share a build's work.

A build (a shape index, render pairs) splits its work by accelerate's process index when its process is one of
several, and the main process finishes it once every process is done. A lone process creates no accelerate state:
that state is a process-wide singleton, and creating it here would fix the device and CPU choice of an `Accelerator`
the caller makes later.
"""

from __future__ import annotations

__all__ = ["launched_processes"]

#: The variables a launcher sets to the number of processes (torchrun and accelerate, then the MPI flavours), as
#: accelerate reads them.
WORLD_SIZE_VARIABLES = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]


def launched_processes():
    """accelerate's ``PartialState`` when this process is one of several launched together, else ``None``.

    CPU processes (gloo) are used when the launch asks for them (``ACCELERATE_USE_CPU``), as ``Accelerator`` does.
    """
    from accelerate.utils import get_int_from_env, parse_flag_from_env

    if get_int_from_env(WORLD_SIZE_VARIABLES, 1) <= 1:
        return None
    from accelerate import PartialState

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    return state if state.num_processes > 1 else None
