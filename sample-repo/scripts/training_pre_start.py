"""Pre-start script of the training-dev workspace.

berth runs this before the workspace container starts. Like Mage Pro's pre-start scripts it
must define get_custom_configs(); the dictionary it returns becomes configuration of the
workspace container.
"""
import os


def get_custom_configs():
    quota = int(os.environ.get("DEV_ENV_GPU_QUOTA", "0"))
    return {
        "TORCH_CUDA_ARCH_LIST": "7.0",
        "TRAINING_MAX_GPUS": str(quota),
    }
