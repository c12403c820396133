# Shell commands and MPI programs on a Ferry endpoint, as Globus Compute's ShellFunction and
# MPIFunction run them; only the import line differs from a Globus Compute script.
#
#   PYTHONPATH=python FERRY_ENDPOINT_ID=<endpoint id> python3 examples/shell_and_mpi.py
#
# The endpoint's agent runs these itself (no Python needed on the endpoint for them): `/bin/bash -c`
# in a fresh directory; MPI programs under the endpoint's launcher (`mpiexec` from Debian's `mpich`
# on a plain machine, `srun` inside a Slurm block).

import json
import os

from ferry_compute import Executor, MPIFunction, ShellFunction

endpoint_id = os.environ.get("FERRY_ENDPOINT_ID") or json.load(open(".ferry/endpoint.json"))["endpoint_id"]

# {name} fields of the command are filled from the keyword arguments of submit().
greet = ShellFunction("echo 'Hello, {name}!' && uname -s")
# A failing command is a result too: its exit code, its output, and the exception name.
failing = ShellFunction("echo 'about to fail' >&2; exit 7")
# walltime: seconds before the command is stopped (exit code 124, as `timeout` gives).
too_slow = ShellFunction("sleep 30", walltime=1)

with Executor(endpoint_id=endpoint_id) as gce:
    hello = gce.submit(greet, name="Ferry").result()
    print("Shell stdout:", hello.stdout.splitlines())
    print("Shell return code:", hello.returncode)

    failed = gce.submit(failing).result()
    print("Failing return code:", failed.returncode, failed.exception_name)
    print("Failing stderr:", failed.stderr.strip())

    slow = gce.submit(too_slow).result()
    print("Walltime:", slow.returncode, slow.exception_name)

    # Two MPI ranks on one node; each rank prints its number.
    gce.resource_specification = {"num_nodes": 1, "ranks_per_node": 2}
    # Literal braces are doubled, as in str.format: ${{PMI_RANK:-...}} reaches bash as ${PMI_RANK:-...}.
    ranks = MPIFunction("bash -c 'echo rank ${{PMI_RANK:-$OMPI_COMM_WORLD_RANK}} of ${{PMI_SIZE:-$OMPI_COMM_WORLD_SIZE}}'")
    mpi = gce.submit(ranks).result()
    print("MPI return code:", mpi.returncode)
    print("MPI ranks:", sorted(line for line in mpi.stdout.splitlines() if line.startswith("rank")))
    print(mpi)
