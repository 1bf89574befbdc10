# Secret.key (the name apps ask for) is now Secret.name, so it is not mistaken
# for the values key_1 … key_5 (issue 9). The column keeps its name, `key`
# (the API's word): only Django's picture of the model changes.

from django.db import migrations, models

import secret_store.models


class Migration(migrations.Migration):
    dependencies = [
        ("realms", "0001_initial"),
        ("secrets", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="secret", name="secret_unique_realm_key"),
                migrations.RenameField(model_name="secret", old_name="key", new_name="name"),
                migrations.AlterField(
                    model_name="secret",
                    name="name",
                    field=models.CharField(
                        db_column="key",
                        help_text="What apps ask for: /api/token?realm=…&key=<name>.",
                        max_length=100,
                        validators=[secret_store.models.validate_key_name],
                    ),
                ),
                migrations.AddConstraint(
                    model_name="secret",
                    constraint=models.UniqueConstraint(
                        fields=("realm", "name"), name="secret_unique_realm_key"
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
