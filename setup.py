"""Copies kernels/ into the package when a wheel is built, so installed gpuroof finds its CUDA sources."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithKernels(build_py):
    def run(self) -> None:
        super().run()
        src = Path(__file__).parent / "kernels"
        dst = Path(self.build_lib) / "gpuroof" / "_kernels"
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.o", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithKernels})
