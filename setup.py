"""Build configuration beyond pyproject.toml: the C extension behind pyxen.hv.atomic.

Everything else (metadata, packages, dependencies) is in pyproject.toml;
``pip install -e .`` (or ``pip install .``) compiles the extension with the
system C compiler.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pyxen.hv._atomic",
            sources=["src/pyxen/hv/_atomic.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Werror=implicit-function-declaration"],
        ),
    ],
)
