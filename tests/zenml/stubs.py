"""The only stand-ins of the ZenML oracle (tests/zenml/oracle.py), each explained here.

`zenml/config/server_config.py` is imported and run unchanged. What is not run are three
package `__init__` files that import ZenML's whole client (pipelines, steps, artifacts,
stores: the ~20 declared dependencies the oracle's venv leaves out):

- ``zenml/__init__.py``          (runs init-hook entry points, imports the client API)
- ``zenml/config/__init__.py``   (imports Docker, deployment and resource settings)
- ``zenml/models/__init__.py``   (imports every model of the REST API)

They are replaced by *package shells*: module objects with the real package directory as
``__path__`` and nothing else, so ``import zenml.config.server_config`` loads the real
submodules it names (zenml.constants, zenml.enums, zenml.logger, zenml.utils.*,
zenml.io.*) from the installed wheel. ``server_config.py`` takes one name from the
``zenml.models`` package: ``ServerDeploymentType``, which the shell gets from its real
module, ``zenml/models/v2/misc/server_models.py``. That is safe: none of the three
``__init__`` files defines or changes anything server_config.py uses.
"""

import importlib.util
import os
import sys
import types

SHELLS = ("zenml", "zenml.config", "zenml.models")


def install_package_shells() -> str:
    """Put the three package shells in sys.modules; return ZenML's package directory."""
    spec = importlib.util.find_spec("zenml")
    if spec is None or spec.origin is None:
        raise ImportError("zenml is not installed in this interpreter")
    root = os.path.dirname(spec.origin)
    for name in SHELLS:
        shell = types.ModuleType(name)
        shell.__path__ = [os.path.join(root, *name.split(".")[1:])]
        shell.__package__ = name
        sys.modules[name] = shell
    from zenml.models.v2.misc.server_models import ServerDeploymentType

    sys.modules["zenml.models"].ServerDeploymentType = ServerDeploymentType
    return root
