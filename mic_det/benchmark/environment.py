"""Where a benchmark run ran: machine, CPU and library versions.

Recorded with each run (in its bench_run.json) because the settings alone do not fix
the numbers: the same seed trained with other CPU kernels or another image decoder can
end several AP50 away, and a report that mixes environments has to say so.
"""
import functools
import importlib
import os
import platform


def machine_description() -> str:
    """The machine in words (cores, architecture, a GPU if present), for the report."""
    text = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name()} present"
    except ImportError:  # pragma: no cover
        pass
    return text


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ENVIRONMENT_MODULES = (("torch", "torch"), ("torchvision", "torchvision"), ("detectron2", "detectron2"),
                       ("numpy", "numpy"), ("pillow", "PIL"), ("opencv", "cv2"), ("pycocotools", "pycocotools"))


@functools.lru_cache(maxsize=None)
def _environment() -> dict:
    """Computed once per benchmark process (the imports and /proc read do not change)."""
    env = {"machine": machine_description(), "cpu": _cpu_model(), "python": platform.python_version()}
    for key, module in ENVIRONMENT_MODULES:
        try:
            env[key] = getattr(importlib.import_module(module), "__version__", "unknown")
        except ImportError:
            env[key] = None
    return env


def environment() -> dict:
    """What a run's numbers depend on besides its settings. Training is bit-exact on one
    machine, but the same seed trained with other CPU kernels or another image decoder
    takes another path and can end several AP50 away, so each run records where it ran."""
    return dict(_environment())  # a copy (its values are strings): callers may keep or change it

