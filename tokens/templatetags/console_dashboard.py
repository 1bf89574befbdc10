"""
`{% console_dashboard %}`: the dashboard on the console's index page
(templates/admin/index.html puts it above Django's app list).

Why a template tag: the admin site (clients/console.py, ConsoleSite) sits in
the `clients` layer, below `tokens`, and the dashboard reads every layer
(tokens/dashboard.py). Overriding `AdminSite.index` would make the bottom
import the top; a registry filled from an AppConfig would work but hides the
wiring. A tag in the tokens app keeps the imports one way: the template
names it, Django loads it, and ConsoleSite knows nothing of it.

The numbers come from tokens/dashboard.py (one service function each); this
module only shapes them for the page: the chart's geometry in SVG user units.
Every text reaches the page through the template, so it is escaped there.
"""

from django import template
from django.utils import timezone

from tokens.dashboard import dashboard_summary, fetches_per_hour, needs_attention

register = template.Library()

#: Who sees the dashboard: it shows realms, secret names and the fetch log.
VIEW_PERMISSIONS = (
    "realms.view_realm",
    "secrets.view_secret",
    "tokens.view_storedtoken",
    "tokens.view_fetchlog",
)

# The chart's drawing area (SVG user units; the SVG scales to its box).
WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24


@register.inclusion_tag("tokens/dashboard.html", takes_context=True)
def console_dashboard(context):
    request = context.get("request")
    if request is None or not request.user.has_perms(VIEW_PERMISSIONS):
        return {"dashboard": None}
    now = timezone.now()
    hours = fetches_per_hour(now)
    return {
        "dashboard": True,
        "summary": dashboard_summary(now),
        "chart": chart(hours),
        "attention": needs_attention(now),
        "now": now,
    }


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 × 10ⁿ at or above `value` (at least 1): the y axis' top."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def chart(hours) -> dict:
    """Stacked bars (ok below, errors above) per hour, with the axis labels."""
    top = _nice_ceiling(max((hour.total for hour in hours), default=0))
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / len(hours)
    base = TOP + plot_height

    def height(count):
        return round(count / top * plot_height, 2)

    bars = []
    for number, hour in enumerate(hours):
        ok_height, error_height = height(hour.ok), height(hour.errors)
        start, end = timezone.localtime(hour.start), timezone.localtime(hour.end)
        bars.append(
            {
                "x": round(LEFT + number * slot + 1, 2),
                "width": round(slot - 2, 2),
                "ok_y": round(base - ok_height, 2),
                "ok_height": ok_height,
                "error_y": round(base - ok_height - error_height, 2),
                "error_height": error_height,
                "title": f"{start:%H:%M}–{end:%H:%M}: {hour.ok} ok, {hour.errors} errors",
                # A time under every sixth bar, and under the last.
                "label": f"{end:%H:%M}" if number % 6 == 5 else "",
                "label_x": round(LEFT + (number + 1) * slot, 2),
            }
        )
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "base": base,
        "label_y": HEIGHT - 6,
        "middle_y": TOP + plot_height / 2,
        "max": top,
        "half": top / 2 if top % 2 else top // 2,
        "bars": bars,
        "ok": sum(hour.ok for hour in hours),
        "errors": sum(hour.errors for hour in hours),
    }
