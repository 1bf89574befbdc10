"""
The catalogue of token providers, as data: one file per preset,
`realms/presets/<name>.json` (docs/presets.md describes the format, and
docs/presets.schema.json is its JSON Schema, which the tests check every file
against). Each holds a title, the help text the console shows, a link to the
provider's documentation, what key_1 … key_n mean, the realm (exactly the body
of POST /api/realm), and catalogue metadata: the provider's daily `quota` and
its `reissue_window`.

A preset is written through the same service as the API's POST, so a realm made
from one is exactly what an operator could have typed. Loading needs nothing but
the standard library: the files are read once per process, and a file that lacks
a field fails loudly, naming itself.
"""

import copy
import json
from functools import lru_cache
from pathlib import Path

from django.core.exceptions import ValidationError

from realms.models import Realm
from realms.services import realm_upsert
from tokenserver.errors import Conflict, NotFound

#: Where the preset files are: this package's directory, one <name>.json each.
PRESETS_DIR = Path(__file__).parent

#: What every preset file holds (docs/presets.md); `quota` and `reissue_window` may be null.
PRESET_FIELDS = ("title", "help", "docs", "values", "quota", "reissue_window", "realm")


class PresetFileError(ValueError):
    """A preset file that cannot be read as a preset (a packaging or editing mistake)."""


def _read(path: Path) -> dict:
    try:
        preset = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise PresetFileError(f"{path.name} is not valid JSON: {error}") from None
    if not isinstance(preset, dict):
        raise PresetFileError(f"{path.name} must hold a JSON object.")
    missing = [field for field in PRESET_FIELDS if field not in preset]
    if missing:
        raise PresetFileError(f"{path.name} lacks {', '.join(missing)} (see docs/presets.md).")
    if not isinstance(preset["realm"], dict) or not isinstance(preset["values"], dict):
        raise PresetFileError(f"{path.name}: realm and values must be objects.")
    return preset


@lru_cache(maxsize=1)
def presets() -> dict[str, dict]:
    """
    Every preset by name (its file's name without .json), sorted by name. Callers
    must not change what they get (preset_get hands out a copy).
    """
    return {path.stem: _read(path) for path in sorted(PRESETS_DIR.glob("*.json"))}


def preset_get(name: str) -> dict:
    """One preset (a copy the caller may change); NotFound naming the known ones."""
    try:
        return copy.deepcopy(presets()[name])
    except KeyError:
        known = ", ".join(presets())
        raise NotFound(f"Unknown preset {name!r}; known presets: {known}.") from None


def is_chained(preset: dict) -> bool:
    """Whether a preset makes a chained realm (fetched with a parent realm's tokens)."""
    return bool(preset["realm"].get("config", {}).get("parent"))


def realm_from_preset(
    name: str,
    realm_id: str | None = None,
    *,
    replace: bool = False,
    url: str | None = None,
    parent: str | None = None,
) -> Realm:
    """
    Create the realm `realm_id` (default: the preset's name) from a preset, with
    `url` instead of the preset's token endpoint when given (presets whose URL
    holds the tenant, such as Entra ID's YOUR_TENANT_ID, or a sandbox). `parent`
    names the parent realm of a chained preset (default: the preset's, the parent
    preset's own name); a preset that is not chained refuses one (ValidationError).
    An existing realm is left alone (409) unless `replace`.

    The catalogue's `quota` and `reissue_window` become the realm's daily budget
    (`daily_budget`, `budget_day_starts`: the provider's own limit, which the
    operator may lower when other systems share the app) and `reissue_window`
    (issue 14, items 3 and 5), unless the preset's realm sets them itself.
    """
    preset = preset_get(name)
    data = preset["realm"]
    realm_id = realm_id or name
    config = data.setdefault("config", {})
    if preset["quota"]:
        config.setdefault("daily_budget", preset["quota"]["daily_calls"])
        config.setdefault("budget_day_starts", preset["quota"].get("day_starts") or "UTC")
    if preset["reissue_window"] is not None:
        config.setdefault("reissue_window", preset["reissue_window"])
    if url:
        data["config"]["url"] = url
    if parent:
        if not is_chained(preset):
            raise ValidationError(
                {"parent": [f"Preset {name!r} is not a chained realm: it takes no parent."]}
            )
        data["config"]["parent"] = parent
    if not replace and Realm.objects.filter(pk=realm_id).exists():
        raise Conflict(f"Realm {realm_id!r} exists; choose another id or replace it.")
    realm, _ = realm_upsert(realm_id, data)
    return realm


def values_text(preset: dict) -> str:
    """What a preset's secrets take, for messages: "key_1 = AppID, key_2 = AppSecret"."""
    values = ", ".join(f"{k} = {v}" for k, v in preset["values"].items())
    return values or "no values of their own"


def quota_text(quota: dict | None) -> str:
    """A preset's quota for people: "2000 calls a day (day starts at UTC+08:00)", or "—"."""
    if not quota:
        return "—"
    starts = quota.get("day_starts") or "+00:00"
    return f"{quota['daily_calls']:,} calls a day (from 00:00 UTC{starts})"


def reissue_text(window: int | None) -> str:
    """A preset's re-issue window for people (docs/presets.md, "reissue_window")."""
    if window is None:
        return "—"
    if window == 0:
        return "same token until it expires"
    return f"same token until {window // 60} min remain"


def catalogue_table() -> str:
    """
    The README's catalogue table (providers section), made from the files: a test
    checks the README against it, and `manage.py loadpreset --markdown` prints it.
    """
    rows = [
        "| preset | provider | secret values | daily quota | re-issue window |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, preset in presets().items():
        values = ", ".join(f"`{key}` {meaning}" for key, meaning in preset["values"].items())
        rows.append(
            f"| `{name}` | [{preset['title']}]({preset['docs']}) | {values} "
            f"| {quota_text(preset['quota'])} | {reissue_text(preset['reissue_window'])} |"
        )
    return "\n".join(rows)
