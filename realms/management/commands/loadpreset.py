from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from realms.presets import is_chained, presets, realm_from_preset, values_text
from tokenserver.errors import Conflict, ServiceError


class Command(BaseCommand):
    help = (
        "Create a realm from a preset (a ready configuration of a provider's token API). "
        "Run with --list to see the presets. A chained preset (a ticket fetched with an "
        "access token) takes its parent realm from --parent, by default the realm its "
        "parent preset makes."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help="the preset, e.g. wechat_official_account")
        parser.add_argument(
            "--id", dest="realm_id", help="the realm's id (default: the preset's name)"
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
            "--list", dest="list_presets", action="store_true", help="list the presets and exit"
        )

    def handle(
        self,
        *args,
        name=None,
        realm_id=None,
        replace=False,
        parent=None,
        list_presets=False,
        **options,
    ):
        if list_presets or not name:
            for preset_name, preset in sorted(presets().items()):
                values = ", ".join(f"{k}={v}" for k, v in preset["values"].items())
                if is_chained(preset):
                    values = f"parent: {preset['realm']['config']['parent']}"
                self.stdout.write(f"{preset_name:<28} {preset['title']}  [{values}]")
            if not name and not list_presets:
                raise CommandError("Name a preset (see the list above).")
            return
        try:
            realm = realm_from_preset(name, realm_id, replace=replace, parent=parent)
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
        preset = presets()[name]
        message = self.style.SUCCESS(f"Realm {realm.id!r} created from preset {name!r}.")
        message += f"\nIts secrets take: {values_text(preset)}."
        if realm.parent_id:
            message += (
                f"\nIts tokens are fetched with the tokens of {realm.parent_id}'s secrets "
                "with the same keys."
            )
        self.stdout.write(message)
