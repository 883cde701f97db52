"""`cxr audit`: duplicates, near-duplicates, conflicts and source confounds of a feature store.

``cxr.audit`` is both this package and the Python API's function: once any ``cxr.audit.*``
module is imported, Python binds the name ``audit`` on ``cxr`` to this package, and
``cxr.audit(...)`` would fail with "'module' object is not callable". So the package is callable
and calls `cxr.api.audit` (a module's class may be replaced for this; see the data model's
"Customizing module attribute access").
"""

import sys
from types import ModuleType


class _CallablePackage(ModuleType):
    def __call__(self, *args, **kwargs):
        from cxr.api import audit

        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
