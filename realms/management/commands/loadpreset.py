from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from realms.presets import presets, realm_from_preset
from tokenserver.errors import Conflict, ServiceError


class Command(BaseCommand):
    help = (
        "Create a realm from a preset (a ready configuration of a provider's token API). "
        "Run with --list to see the presets."
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
            "--list", dest="list_presets", action="store_true", help="list the presets and exit"
        )

    def handle(self, *args, name=None, realm_id=None, replace=False, list_presets=False, **options):
        if list_presets or not name:
            for preset_name, preset in sorted(presets().items()):
                values = ", ".join(f"{k}={v}" for k, v in preset["values"].items())
                self.stdout.write(f"{preset_name:<28} {preset['title']}  [{values}]")
            if not name and not list_presets:
                raise CommandError("Name a preset (see the list above).")
            return
        try:
            realm = realm_from_preset(name, realm_id, replace=replace)
        except Conflict:
            raise CommandError(
                f"Realm {realm_id or name!r} exists: choose another id with --id, "
                "or overwrite it with --replace."
            ) from None
        except ServiceError as error:
            raise CommandError(error.detail) from None
        except ValidationError as error:
            raise CommandError(f"Invalid realm: {error.messages}") from None
        values = ", ".join(f"{k} = {v}" for k, v in presets()[name]["values"].items())
        self.stdout.write(
            self.style.SUCCESS(f"Realm {realm.id!r} created from preset {name!r}.")
            + f"\nIts secrets take: {values}."
        )
