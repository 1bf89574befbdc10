"""
The landing page at `/`: where a person who opens the server's address (the URL
`make run` prints, the console's "View site") finds the console, the API's
docs and the probes. Public, like the docs and the probes: it shows no data.
"""

from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def home(request):
    return render(request, "home.html")
