"""
Presets: ready realm configurations for the token APIs people use. They are
data (presets.json), written through the same service as the API's POST, so
a preset is exactly what an operator could have typed.
"""

import copy
import json
from functools import lru_cache
from pathlib import Path

from django.core.exceptions import ValidationError

from realms.models import Realm
from realms.services import realm_upsert
from tokenserver.errors import Conflict, NotFound

PRESETS_FILE = Path(__file__).with_name("presets.json")


@lru_cache(maxsize=1)
def presets() -> dict:
    """
    Every preset by name: {"title", "docs", "values", "realm"}, and "help" (a short
    text the console shows) where a preset needs one: a chained preset's realm names
    its default parent in config.parent.
    """
    return json.loads(PRESETS_FILE.read_text())


def preset_get(name: str) -> dict:
    try:
        return presets()[name]
    except KeyError:
        known = ", ".join(sorted(presets()))
        raise NotFound(f"Unknown preset {name!r}; known presets: {known}.") from None


def is_chained(preset: dict) -> bool:
    """Whether a preset makes a chained realm (fetched with a parent realm's tokens)."""
    return bool(preset["realm"].get("config", {}).get("parent"))


def realm_from_preset(
    name: str, realm_id: str | None = None, *, replace: bool = False, parent: str | None = None
) -> Realm:
    """
    Create the realm `realm_id` (default: the preset's name) from a preset.
    An existing realm is left alone (409) unless `replace`. `parent` names the
    parent realm of a chained preset (default: the preset's, the parent preset's
    own name); a preset that is not chained refuses one (ValidationError).
    """
    preset = preset_get(name)
    realm_id = realm_id or name
    data = copy.deepcopy(preset["realm"])
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
