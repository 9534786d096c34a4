"""Build configuration beyond pyproject.toml: pyxen's small C extensions.

``pyxen.hv._atomic`` (locked operations on guest memory, behind
pyxen.hv.atomic), ``pyxen.memory._pageswap`` (moving a guest page into a
file of its own, behind pyxen.memory.page_files) and ``pyxen.kvm._runloop``
(one KVM_RUN with the hypercall exit handled in C, behind pyxen.kvm.vcpu;
optional: without it the vCPU loop decodes every exit in Python).
Everything else (metadata, packages, dependencies) is in pyproject.toml;
``pip install -e .``
(or ``pip install .``) compiles the extensions with the system C compiler.
"""

import compileall
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCES = Path(__file__).resolve().parent / "src" / "pyxen"


class BuildExtAndBytecode(build_ext):
    """An editable install (``pip install -e .``) builds the extensions in place;
    it then also compiles the package's bytecode, as pip does for a regular
    install: without it, where PYTHONDONTWRITEBYTECODE is set (as on the
    development machines), every ``pyxen`` command compiles every module it
    imports, which doubles its start-up time."""

    def run(self) -> None:
        super().run()
        if self.inplace:
            compileall.compile_dir(str(SOURCES), quiet=1)

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
         "-Werror=implicit-function-declaration"]

setup(
    cmdclass={"build_ext": BuildExtAndBytecode},
    ext_modules=[
        Extension("pyxen.hv._atomic", sources=["src/pyxen/hv/_atomic.c"],
                  extra_compile_args=FLAGS),
        Extension("pyxen.memory._pageswap", sources=["src/pyxen/memory/_pageswap.c"],
                  extra_compile_args=FLAGS),
        Extension("pyxen.kvm._runloop", sources=["src/pyxen/kvm/_runloop.c"],
                  extra_compile_args=FLAGS),
    ],
)
