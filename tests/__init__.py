"""signalmint's test suite.

The suite caches the bytecode of signalmint and of the tests even where PYTHONDONTWRITEBYTECODE is
set (CI images set it): it starts some thirty `signalmint` processes, and each would otherwise
compile every module of the package from source again. Third-party packages are installed with
their bytecode (pyproject.toml's ``[tool.uv] compile-bytecode``).
"""

import sys

sys.dont_write_bytecode = False
