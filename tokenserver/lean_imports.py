"""
What a serving worker does not import.

Django REST framework's `rest_framework.compat` imports PyYAML, Pygments and
uritemplate whenever they are installed, for features tokenserver does not serve
(DRF's own schema generator and YAML renderer, syntax highlighting in the
browsable API). They are installed all the same: drf-spectacular needs PyYAML
and uritemplate to build /api/schema/, the test tools bring Pygments. In every
worker they cost about 5 MiB of resident memory (issue 10's target is 80 MiB
per worker), so the WSGI entry point imports DRF's compat module with the three
hidden, and then lets them be imported normally: drf-spectacular imports them
itself the first time the schema is asked for (tokenserver.openapi).
"""

import importlib
import sys

#: Optional packages rest_framework.compat probes for at import time.
DRF_OPTIONAL_EXTRAS = ("yaml", "pygments", "uritemplate")


def import_drf_without_optional_extras() -> None:
    """
    Import rest_framework.compat while its optional extras look absent.

    A `None` in sys.modules makes `import name` raise ImportError, which is
    what compat catches; the entries are removed afterwards so that a later
    import (drf-spectacular's) finds the real package. A no-op when compat or
    an extra is already imported.
    """
    if "rest_framework.compat" in sys.modules:
        return
    hidden = [name for name in DRF_OPTIONAL_EXTRAS if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    try:
        importlib.import_module("rest_framework.compat")
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
