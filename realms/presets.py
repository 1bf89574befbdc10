"""
Presets: ready realm configurations for the token APIs people use. They are
data (presets.json), written through the same service as the API's POST, so
a preset is exactly what an operator could have typed.
"""

import json
from functools import lru_cache
from pathlib import Path

from realms.models import Realm
from realms.services import realm_upsert
from tokenserver.errors import Conflict, NotFound

PRESETS_FILE = Path(__file__).with_name("presets.json")


@lru_cache(maxsize=1)
def presets() -> dict:
    """Every preset by name: {"title", "docs", "values", "realm"}."""
    return json.loads(PRESETS_FILE.read_text())


def preset_get(name: str) -> dict:
    try:
        return presets()[name]
    except KeyError:
        known = ", ".join(sorted(presets()))
        raise NotFound(f"Unknown preset {name!r}; known presets: {known}.") from None


def realm_from_preset(name: str, realm_id: str | None = None, *, replace: bool = False) -> Realm:
    """
    Create the realm `realm_id` (default: the preset's name) from a preset.
    An existing realm is left alone (409) unless `replace`.
    """
    preset = preset_get(name)
    realm_id = realm_id or name
    if not replace and Realm.objects.filter(pk=realm_id).exists():
        raise Conflict(f"Realm {realm_id!r} exists; choose another id or replace it.")
    realm, _ = realm_upsert(realm_id, preset["realm"])
    return realm
