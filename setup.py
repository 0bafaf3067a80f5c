from pathlib import Path

from setuptools import find_packages, setup

version: dict[str, str] = {}
exec(Path("vsr/_version.py").read_text(), version)

setup(
    name="vsr",
    version=version["__version__"],
    description="Real-time video super-resolution with ESPCN (sub-pixel convolution in LR space)",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["vsr", "vsr.*"]),
    package_data={"vsr.models": ["weights/*.safetensors"]},
    include_package_data=True,
    install_requires=[
        # torch is pinned by the install commands (a CPU wheel); any 2.x from 2.1 works.
        "torch>=2.1",
        "av>=12",
        "opencv-python>=4.8",
        "numpy>=1.24",
        "pyyaml>=6",
        # safetensors: weights without pickle, with architecture metadata.
        "safetensors>=0.4",
        # tqdm: the progress bar of every command (one bar over all workers of a cluster job); small, pure Python.
        "tqdm>=4.60",
    ],
    extras_require={
        # dev: everything the tests import (.ci/run installs it into a fresh virtual environment);
        # ray, s3fs and moto[server]: test_cluster runs a two-node Ray cluster and a local S3 on loopback.
        "dev": ["pytest>=7", "hypothesis>=6", "onnx>=1.15", "onnxruntime>=1.17", "ray>=2.9", "fsspec>=2023.1",
                "s3fs>=2023.1", "moto[server]>=5"],
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "ray": ["ray>=2.9"],  # vsr run --executor ray (docs/CLUSTER.md)
        "s3": ["fsspec>=2023.1", "s3fs>=2023.1"],  # s3:// inputs and outputs of --executor ray
    },
    entry_points={"console_scripts": ["vsr=vsr.cli:main"]},
)
