"""
The OpenAPI schema and docs routes (/api/schema/, /api/docs/), loaded on their
first request.

Why lazily: drf-spectacular's views import its generator, whose plumbing
imports rest_framework.test (and with it django.test, unittest, xml.dom,
wsgiref): about 2.3 MiB in every production worker that imports them, though
few workers ever serve the schema (issue 10: RSS ≤ 80 MiB per worker; issue
13). So the URLconf routes these paths to a small view that imports the
drf-spectacular view by its dotted path when it is first asked for, and the
API's descriptions (the `schema` modules, registered by the preprocessing hook
in SPECTACULAR_SETTINGS) load only when a schema is generated. Not a way
around an import cycle: drf-spectacular is not ours.
"""

import threading

from django.utils.module_loading import import_string


def lazy_view(dotted_path: str, **initkwargs):
    """
    A view that serves `dotted_path`'s class-based view (`as_view(**initkwargs)`),
    imported on its first request: once, whichever threads ask at the same time.
    """
    lock = threading.Lock()
    resolved = []

    def view(request, *args, **kwargs):
        if not resolved:
            with lock:
                if not resolved:
                    resolved.append(import_string(dotted_path).as_view(**initkwargs))
        return resolved[0](request, *args, **kwargs)

    # As the view it stands for (every DRF APIView): DRF's session authentication
    # checks CSRF itself, the middleware must not refuse the request first.
    view.csrf_exempt = True
    view.__name__ = view.__qualname__ = dotted_path.rpartition(".")[2]
    view.__doc__ = f"{dotted_path}, imported on its first request (tokenserver.openapi)."
    return view
