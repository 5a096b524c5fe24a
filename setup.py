"""The one installed name: the layer folders install as `fedsilo.<layer>` (see pyproject.toml).

The repository keeps its layers at the top (`privacy/`, `strategies/`, `peers/`,
`simulations/`) so the tree shows the architecture; setuptools' package-dir mapping in
pyproject.toml installs them under `fedsilo`. This file only lists their subpackages,
which static configuration cannot discover through a mapping.
"""

from setuptools import find_packages, setup

LAYERS = ("privacy", "strategies", "peers", "simulations")

setup(
    packages=[
        "fedsilo",
        *(
            f"fedsilo.{layer}{'.' + sub if sub else ''}"
            for layer in LAYERS
            for sub in ["", *find_packages(where=layer)]
        ),
    ]
)
