"""Realm writes: create, update (whole or in part) and delete, with their arguments."""

from django.core.exceptions import ValidationError
from django.db import transaction

from realms.models import Argument, Realm
from tokenserver import netguard
from tokenserver.errors import Conflict

#: Realm fields the API carries inside "config".
CONFIG_FIELDS = (
    "url",
    "method",
    "content_type",
    "token_path",
    "expires_in_path",
    "expires_in_unit",
    "expires_at_path",
    "success_conditions",
    "error_code_path",
    "error_message_path",
    "code_url",
    "timeout",
    "max_concurrency",
    "refresh_margin",
    "reissue_window",
    "default_ttl",
    "min_flush_interval",
    "max_retries",
    "rate_limit_codes",
    "permanent_error_codes",
    "permanent_error_ttl",
    "breaker_threshold",
    "breaker_cooldown",
    "daily_budget",
    "budget_alert_percent",
    "budget_day_starts",
    "jwt",
    "parent",
    "parent_key",
    "parent_rejected_codes",
)

#: Fields at the top level of the API's realm object.
TOP_FIELDS = ("kind", "comment")

#: API config fields whose value is another attribute on the model: the parent realm by id.
CONFIG_ATTRIBUTES = {"parent": "parent_id"}


def config_attribute(name: str) -> str:
    """The Realm attribute a "config" field reads and writes ("parent" → "parent_id")."""
    return CONFIG_ATTRIBUTES.get(name, name)


def _api_path(field: str) -> str:
    """A Realm field's path in the API's realm object ("url" → "config.url")."""
    if field in ("id", "__all__", *TOP_FIELDS):
        return field
    return f"config.{field}"


def _renamed(error: ValidationError, rename) -> ValidationError:
    """Re-key a model ValidationError with the API's field paths."""
    if not hasattr(error, "error_dict"):
        return error
    return ValidationError(
        {rename(field): messages for field, messages in error.message_dict.items()}
    )


@transaction.atomic
def realm_upsert(realm_id: str, data: dict, *, partial: bool = False) -> tuple[Realm, bool]:
    """
    Create the realm `realm_id` or update it from `data` (top-level fields and
    a "config" dict, as the API speaks). Without `partial`, fields that `data`
    leaves out take their defaults (the seed's POST replaces the realm); with
    it, they keep their values. Arguments are replaced when given.

    Raises django ValidationError keyed by API field path; nothing is written
    unless everything is valid.
    """
    realm = Realm.objects.select_for_update().filter(pk=realm_id).first()
    created = realm is None
    if created or not partial:
        fresh = Realm(id=realm_id)
        if realm is not None:
            fresh.created_at = realm.created_at
            fresh._state.adding = False  # replacing a row, not adding one
        realm = fresh
    config = data.get("config") or {}
    for name in CONFIG_FIELDS:
        if name in config:
            value = config[name]
            if name == "parent":
                value = value or None  # "" says "no parent", like null
            setattr(realm, config_attribute(name), value)
    for name in TOP_FIELDS:
        if name in data:
            setattr(realm, name, data[name])
    if "kind" not in data and (created or not partial):
        realm.kind = _implied_kind(data, config)

    arguments = None
    if "arguments" in config:
        arguments = [
            Argument(realm=realm, order=position, **argument)
            for position, argument in enumerate(config["arguments"] or [])
        ]
    try:
        realm.full_clean()
    except ValidationError as error:
        raise _renamed(error, _api_path) from None
    refusals = realm_url_refusals(realm)  # resolves the hosts: after the cheap checks
    if refusals:
        raise _renamed(ValidationError(refusals), _api_path)
    if arguments is None and not created and partial:
        # The arguments stay: they must still hold against the realm as changed (a
        # $parent_token or $jwt whose settings this change removes).
        arguments_checked = list(realm.arguments.all())
        for argument in arguments_checked:
            argument.realm = realm
    else:
        arguments_checked = arguments or []
    for position, argument in enumerate(arguments_checked):
        try:
            argument.full_clean(exclude=["realm"])
        except ValidationError as error:
            prefix = f"config.arguments[{position}]."
            raise _renamed(error, lambda field, prefix=prefix: prefix + field) from None

    realm.save()
    if arguments is not None:
        realm.arguments.all().delete()
        Argument.objects.bulk_create(arguments)
    elif not created and not partial:
        realm.arguments.all().delete()
    return realm, created


def realm_url_refusals(realm: Realm) -> dict[str, str]:
    """
    Why the upstream guard refuses the realm's URLs, by field (empty: both
    may be fetched). Resolves their hosts, so it is network I/O, kept out of
    Realm.clean(); the fetch checks the address again when it connects.
    """
    refusals = {}
    for field in ("url", "code_url"):
        value = getattr(realm, field)
        if value:
            try:
                netguard.check_url(value)
            except netguard.RefusedDestination as refusal:
                refusals[field] = str(refusal)
    return refusals


def _implied_kind(data: dict, config: dict) -> str:
    """The seed had no kind: config → config, logic_code → code, neither → fixed."""
    if config.get("code_url") and not config.get("url"):
        return Realm.Kind.CODE
    if config:
        return Realm.Kind.CONFIG
    return Realm.Kind.FIXED


def realm_delete(realm_id: str) -> None:
    """Delete a realm; refused (409) while secrets use it, or chained realms take its tokens."""
    realm = Realm.objects.get(pk=realm_id)
    count = realm.secrets.count()
    if count:
        raise Conflict(f"Realm {realm_id!r} still has {count} secret(s); delete them first.")
    children = sorted(realm.children.values_list("id", flat=True))
    if children:
        raise Conflict(
            f"Realm {realm_id!r} is the parent of {', '.join(children)}: those realms are "
            "fetched with its tokens; give them another parent or delete them first."
        )
    realm.delete()
