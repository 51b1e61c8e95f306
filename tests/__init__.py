"""signalmint's test suite.

The suite writes bytecode caches even where PYTHONDONTWRITEBYTECODE is set (CI images set it): it
starts some thirty `signalmint` processes, and each would otherwise compile every module it
imports (the package, SQLAlchemy, FastAPI, pydantic...) from source again. Set here, before the
suite imports any of them.
"""

import sys

sys.dont_write_bytecode = False
