"""The function ``get_worker_hardware_details`` submits: a text report of the machine a worker runs on.

It travels to the worker as source, so it is self-contained: standard library only, every helper
inside it.
"""


def run_hardware_report(env=None):
    """Python, CPU, memory, GPU and disk of this host, as ``== <section> ==`` blocks of text."""
    import os
    import platform
    import shlex
    import shutil
    import subprocess
    import sys

    def python_runtime_host_info():
        return (
            f"          Version: {sys.version}"
            f"\n     Version info: {sys.version_info}"
            f"\n Interpreter path: {sys.executable}"
            "\n"
            f"\n CPU architecture: {platform.processor() or platform.machine()}"
            f"\n   CPU core count: {os.cpu_count()}"
            "\n"
            f"\n        Node name: {platform.node()}"
            f"\n         Platform: {platform.platform()}"
            "\n"
            f"\n             HOME: {os.getenv('HOME')}"
            f"\n             USER: {os.getenv('USER')}"
            f"\n             LANG: {os.getenv('LANG')}"
            f"\n             PATH: {os.getenv('PATH')}"
            f"\n      VIRTUAL_ENV: {os.getenv('VIRTUAL_ENV')}"
            "\n"
            f"\n              uid: {os.getuid() if hasattr(os, 'getuid') else None}"
        )

    def mem_info():
        try:
            with open("/proc/meminfo") as f:
                wanted = ("MemTotal", "MemFree", "MemAvailable", "SwapTotal", "SwapFree")
                return "".join(line for line in f if line.split(":")[0] in wanted).rstrip()
        except OSError:
            return "memory info not available (no /proc/meminfo)"

    def run_command(cmd):
        argv = shlex.split(cmd)
        if not shutil.which(argv[0]):
            return None
        try:
            res = subprocess.run(argv, timeout=30, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return "Error: command timed out (took more than 30 seconds)."
        except Exception as e:  # noqa: BLE001
            return f"An error of type {type(e).__name__} occurred."
        return res.stdout or res.stderr or "Warning: command had no output on stdout or stderr"

    cpu_cmd = {"linux": "lscpu", "darwin": "sysctl -a machdep.cpu"}.get(sys.platform)
    sections = [
        ("python: python_runtime_host_info", python_runtime_host_info),
        ("python: memory (/proc/meminfo)", mem_info),
    ]
    for cmd in (cpu_cmd, "nvidia-smi", "df -h", "lshw -C display"):
        if cmd:
            sections.append((f"shell: {cmd}", lambda c=cmd: run_command(c)))
    outputs = []
    for name, produce in sections:
        output = produce()
        if output:
            env_str = f"== {env} == " if env else ""
            outputs.append(f"{env_str}== {name} ==\n{output}")
    return "\n\n".join(outputs)
