"""mic_det: MIC (Masked Image Consistency) domain-adaptive detection on detectron2."""
from setuptools import find_packages, setup

setup(
    name="mic_det",
    version="0.1.0",
    description="Domain-adaptive object detection (SADA + MIC) as a detectron2 extension",
    packages=find_packages(include=["mic_det", "mic_det.*"]),
    python_requires=">=3.10",
    # detectron2 itself is installed by tools/install_detectron2.sh: it has no
    # official PyPI release (see docs/install.md).
    install_requires=[
        "torch>=2.11",
        "torchvision",
        "fvcore",
        "iopath",
        "pycocotools",
        "opencv-python-headless",
        "cityscapesscripts",
        "numpy<2",  # the detectron2 wheel we install asks for it
        "setuptools<81",  # detectron2.model_zoo imports pkg_resources
        "pyyaml",
        "psutil",  # host memory figures in the benchmarks
        "matplotlib",  # tools/visualize.py curves
    ],
    extras_require={"dev": ["pytest", "pytest-timeout"]},
)
