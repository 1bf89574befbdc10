from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from realms.presets import (
    catalogue_table,
    is_chained,
    preset_get,
    presets,
    realm_from_preset,
    values_text,
)
from tokenserver.errors import Conflict, ServiceError


class Command(BaseCommand):
    help = (
        "Create a realm from a preset (a ready configuration of a provider's token API, "
        "realms/presets/<name>.json; docs/presets.md). Run with --list to see the presets. "
        "A chained preset (a ticket fetched with an access token) takes its parent realm "
        "from --parent, by default the realm its parent preset makes."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help="the preset, e.g. wechat_official_account")
        parser.add_argument(
            "--id", dest="realm_id", help="the realm's id (default: the preset's name)"
        )
        parser.add_argument(
            "--url",
            help="the token endpoint instead of the preset's (a tenant in the URL, such as "
            "Entra ID's YOUR_TENANT_ID, a sandbox, your own OAuth 2.0 server)",
        )
        parser.add_argument(
            "--replace", action="store_true", help="overwrite a realm that already has this id"
        )
        parser.add_argument(
            "--parent",
            help="a chained preset's parent realm, whose tokens its tickets are fetched with "
            "(default: the preset's, e.g. wechat_official_account)",
        )
        parser.add_argument(
            "--list",
            dest="list_presets",
            action="store_true",
            help="list the presets (name, title, secret values) and exit",
        )
        parser.add_argument(
            "--markdown",
            action="store_true",
            help="print the catalogue as the README's Markdown table and exit",
        )

    def handle(
        self,
        *args,
        name=None,
        realm_id=None,
        url=None,
        replace=False,
        parent=None,
        list_presets=False,
        markdown=False,
        **options,
    ):
        if markdown:
            self.stdout.write(catalogue_table())
            return
        if list_presets or not name:
            for preset_name, preset in presets().items():
                values = ", ".join(f"{k}={v}" for k, v in preset["values"].items())
                if is_chained(preset):
                    values = f"parent: {preset['realm']['config']['parent']}"
                self.stdout.write(f"{preset_name:<36} {preset['title']}  [{values}]")
            if not name and not list_presets:
                raise CommandError("Name a preset (see the list above).")
            return
        try:
            realm = realm_from_preset(name, realm_id, replace=replace, url=url, parent=parent)
        except Conflict:
            raise CommandError(
                f"Realm {realm_id or name!r} exists: choose another id with --id, "
                "or overwrite it with --replace."
            ) from None
        except ServiceError as error:
            raise CommandError(error.detail) from None
        except ValidationError as error:
            fields = getattr(error, "message_dict", {})
            if "config.parent" in fields:
                raise CommandError(
                    f"{' '.join(fields['config.parent'])} Create the parent realm first "
                    "(loadpreset its preset), or name it with --parent."
                ) from None
            raise CommandError(f"Invalid realm: {error.messages}") from None
        preset = preset_get(name)
        message = self.style.SUCCESS(f"Realm {realm.id!r} created from preset {name!r}.")
        message += f"\nIts secrets take: {values_text(preset)}."
        if realm.parent_id:
            message += (
                f"\nIts tokens are fetched with the tokens of {realm.parent_id}'s secrets "
                "with the same keys."
            )
        message += f"\n{preset['help']}\nDocs: {preset['docs']}"
        self.stdout.write(message)
