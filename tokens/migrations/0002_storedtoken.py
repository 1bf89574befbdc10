# CachedToken (a database row, not the cache) is now StoredToken (issue 9).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("secrets", "0001_initial"),
        ("tokens", "0001_initial"),
    ]

    operations = [
        migrations.RenameModel("CachedToken", "StoredToken"),
        migrations.AlterModelOptions(name="storedtoken", options={"verbose_name": "stored token"}),
        migrations.AlterField(
            model_name="storedtoken",
            name="secret",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.CASCADE,
                primary_key=True,
                related_name="stored_token",
                serialize=False,
                to="secrets.secret",
            ),
        ),
    ]
